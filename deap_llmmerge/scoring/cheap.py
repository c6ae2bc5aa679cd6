"""Fitness for a fraction of the items: anchors, and racing.

A call of the map scores its plans at a :class:`Fidelity`: on the whole benchmarks (exact), or on the anchor
items with their weights (an estimate, :mod:`.anchors`); and raced or not. Racing scores the items in a fixed
shuffled order, in slices, and after each slice bounds every objective of every plan (its estimate moved
``z`` standard errors its better way; the standard error of a weighted mean, or of a ratio for token-weighted
losses, with the finite-population correction). A plan whose optimistic fitness cannot make it (below the
elites' threshold, lexicographically; or dominated by a member of the front) stops there, with its estimate.

**Paired** (tournament selection, when the race knows what the elite it must beat did on each item and the
first objective is made of accuracies of multiple-choice, completion or tensors benchmarks): the bound is on
the plan's per-item difference from that elite on the items scored so far, not on its own score, so the
items' shared difficulty cancels: the plan stops once the mean difference, moved ``z`` standard errors up, is
below 0. Candidates of one search differ on few items, so this stops far sooner than the unpaired bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .benchmarks import BenchmarkData
from .items import item_of_rows, weighted_metrics
from .objectives import Objective
from .population import PopulationScorer

__all__ = ["Race", "Fidelity", "EXACT", "Outcome", "ItemSets", "estimate", "paired_optimistic", "score_raced"]


@dataclass(frozen=True)
class Race:
    """Stop a plan whose optimistic weighted fitness is below ``thresholds[0]`` (``rule="lexicographic"``:
    it cannot enter the elites) or dominated by one of ``thresholds`` (``rule="dominance"``: it cannot enter
    the front)."""

    rule: str
    thresholds: tuple[tuple[float, ...], ...]
    slices: int = 4
    z: float = 1.96  # a 95% two-sided (97.5% one-sided) bound
    seed: int = 0
    reference: tuple[tuple[str, np.ndarray], ...] | None = None  # the elite's 0/1 per item, per benchmark

    def stops(self, optimistic: Sequence[float]) -> bool:
        if self.rule == "lexicographic":
            return bool(self.thresholds) and tuple(optimistic) < tuple(self.thresholds[0])
        return any(all(t >= o for t, o in zip(front, optimistic)) and any(t > o for t, o in zip(front, optimistic))
                   for front in self.thresholds)


@dataclass(frozen=True)
class Fidelity:
    """How one call scores its plans: ``exact`` on the whole benchmarks (else on the anchors, when there are
    any), ``race`` or not, and where a share says it is being scored (``heartbeat``)."""

    exact: bool = True
    race: Race | None = None
    heartbeat: tuple | None = None


EXACT = Fidelity()


@dataclass
class Outcome:
    """A plan's metrics, its item tables (of the items scored), how many items it was scored on and whether
    racing stopped it."""

    metrics: dict
    tables: dict
    scored: int
    stopped: bool = False
    weights: dict | None = None  # per benchmark, the weights of the tables' items (in their order)


def rows_of_items(data: BenchmarkData, items: np.ndarray) -> torch.Tensor:
    """The rows (ascending) of the items ``items`` (ascending item positions, from 0)."""
    return torch.isin(item_of_rows(data), torch.as_tensor(items)).nonzero().flatten()


class ItemSets:
    """This process's scorers of item subsets (anchors, racing slices), the last few kept."""

    def __init__(self, scorer: PopulationScorer, keep: int = 20) -> None:
        self.full = scorer
        self.keep = keep
        self._scorers: OrderedDict[tuple, PopulationScorer] = OrderedDict()

    def scorer(self, subsets: dict[str, tuple[np.ndarray, np.ndarray]]) -> PopulationScorer:
        """A scorer of ``{benchmark: (item positions, their weights)}``."""
        key = tuple((name, items.tobytes(), weights.tobytes()) for name, (items, weights) in subsets.items())
        if key not in self._scorers:
            full = self.full
            data = {name: full.benchmarks[name].subset(rows_of_items(full.benchmarks[name], items))
                    for name, (items, _) in subsets.items()}
            weights = {name: torch.as_tensor(w, dtype=torch.float64) for name, (_, w) in subsets.items()}
            scorer = PopulationScorer(full.engine, data, full.batch_size, full.memory_budget, full.custom,
                                      full.prefix_sharing or full.head_at_labels or full.packing, weights)
            scorer.prefix_sharing, scorer.head_at_labels = full.prefix_sharing, full.head_at_labels
            scorer.packing = full.packing
            self._scorers[key] = scorer
            while len(self._scorers) > self.keep:
                self._scorers.popitem(last=False)
        self._scorers.move_to_end(key)
        return self._scorers[key]


def estimate(table: dict, kind: str, metric: str, weights: torch.Tensor) -> tuple[float, float]:
    """``(estimate, standard error)`` of one metric from the items scored (weights: theirs)."""
    total = float(weights.sum())
    if metric in ("loss", "perplexity") or (metric == "accuracy" and kind == "text"):
        top = table["nll"] if metric != "accuracy" else table["right"]
        bottom = table["tokens"]
        ratio = float((weights * top).sum() / (weights * bottom).sum())
        error = float(torch.sqrt(((weights * (top - ratio * bottom)) ** 2).sum()) / (weights * bottom).sum())
        return ratio, error
    values = table["correct"] if metric == "accuracy" else table["choice_nll"]
    mean = float((weights * values).sum()) / total
    return mean, float(torch.sqrt(((weights * (values - mean)) ** 2).sum())) / total


def _optimistic(objectives: Sequence[Objective], signs: Sequence[float], tables: dict, kinds: dict, weights: dict,
                fraction: dict, z: float) -> tuple[float, ...]:
    """Each objective's value ``z`` standard errors towards its better side (a combined objective: the
    weighted mean of its terms, their errors added as independent)."""
    out = []
    for objective, sign in zip(objectives, signs):
        total, variance = 0.0, 0.0
        for term in objective.terms:
            value, error = estimate(tables[term.benchmark], kinds[term.benchmark],
                                    "loss" if term.metric == "perplexity" else term.metric, weights[term.benchmark])
            error *= math.sqrt(max(0.0, 1.0 - fraction[term.benchmark]))
            if term.metric == "perplexity":  # optimistic already: the bound of the loss, exponentiated
                value, error = math.exp(min(value - z * error, 700.0)), 0.0
            total += term.share * value
            variance += (term.share * error) ** 2
        out.append(sign * total + z * math.sqrt(variance))
    return tuple(out)


def paired_optimistic(objective: Objective, sign: float, correct: dict, positions: dict, weights: dict,
                      fraction: dict, reference: dict, z: float) -> float | None:
    """The first objective's difference from the reference (the elite) on the items scored, ``z`` standard
    errors towards the plan's better side (weighted means of per-item differences, the finite-population
    correction applied), or None when a term is not a per-item accuracy the reference holds."""
    total, variance = 0.0, 0.0
    for term in objective.terms:
        if term.metric != "accuracy" or term.benchmark not in reference or term.benchmark not in correct:
            return None
        w = weights[term.benchmark]
        difference = correct[term.benchmark] - torch.as_tensor(reference[term.benchmark][positions[term.benchmark]],
                                                                dtype=torch.float64)
        mean = float((w * difference).sum() / w.sum())
        error = float(torch.sqrt(((w * (difference - mean)) ** 2).sum()) / w.sum())
        total += term.share * mean
        variance += (term.share * error) ** 2 * max(0.0, 1.0 - fraction[term.benchmark])
    return sign * total + z * math.sqrt(variance)


def race_stops(race: Race, objectives: Sequence[Objective], signs: Sequence[float], tables: dict, kinds: dict,
           positions: dict, weights: dict, fraction: dict) -> bool:
    if race.rule == "lexicographic" and race.reference is not None:
        reference = dict(race.reference)
        correct = {name: table["correct"] for name, table in tables.items() if kinds[name] != "text"}
        bound = paired_optimistic(objectives[0], signs[0], correct, positions, weights, fraction, reference, race.z)
        if bound is not None:
            return bound < 0
    return race.stops(_optimistic(objectives, signs, tables, kinds, weights, fraction, race.z))


def score_raced(plans: Sequence, sets: ItemSets, chosen: dict[str, tuple[np.ndarray, np.ndarray]],
                race: Race, objectives: Sequence[Objective], signs: Sequence[float],
                fail: Callable[[int, Exception], None]) -> list[Outcome | None]:
    """Race ``plans`` over the items ``chosen`` per benchmark (positions and weights), one plan after the
    other through the slices, so that the engine merges each plan once (shared prefixes across plans are
    not used while racing)."""
    rng = np.random.default_rng(race.seed)
    orders = {name: rng.permutation(len(items)) for name, (items, _) in chosen.items()}
    kinds = {name: data.kind for name, data in sets.full.benchmarks.items()}
    slices = []
    for s in range(race.slices):
        parts = {}
        for name, (items, weights) in chosen.items():
            picked = np.sort(np.array_split(orders[name], race.slices)[s])
            parts[name] = (items[picked], weights[picked])
        if all(len(part[0]) for part in parts.values()):
            slices.append(parts)
    outcomes: list[Outcome | None] = [None] * len(plans)
    for i, plan in enumerate(plans):
        scored: dict[str, list] = {name: [] for name in chosen}
        for s, parts in enumerate(slices):
            result = sets.scorer(parts).score([plan], lambda k, exc, at=i: fail(at, exc))[0]
            if result is None:  # failed: what it scored before does not count
                outcomes[i] = None
                break
            for name in chosen:
                scored[name].append((parts[name][0], parts[name][1], result[1][name]))
            tables = {name: {key: torch.cat([t[key] for _, _, t in scored[name]]) for key in scored[name][0][2]}
                      for name in chosen}
            positions = {name: np.concatenate([p for p, _, _ in scored[name]]) for name in chosen}
            weights = {name: torch.as_tensor(np.concatenate([w for _, w, _ in scored[name]]), dtype=torch.float64)
                       for name in chosen}
            fraction = {name: float(weights[name].sum() / chosen[name][1].sum()) for name in chosen}
            metrics = {name: weighted_metrics(tables[name], kinds[name], weights[name]) for name in chosen}
            count = sum(len(w) for w in weights.values())
            last = s == len(slices) - 1
            stop = not last and race_stops(race, objectives, signs, tables, kinds, positions, weights, fraction)
            outcomes[i] = Outcome(metrics, tables, count, stop, weights)
            if stop:
                break
    return outcomes
