"""Objectives: which metric of which benchmark the search optimises, and in which direction.

An objective is written ``benchmark.metric`` (``qa.accuracy``, ``play.loss``); with one benchmark the
benchmark's name may be left out (``accuracy``). Accuracy is maximised; loss, perplexity (text) and
choice_loss (multiple choice) are minimised. The default is the accuracy and loss of every benchmark, in order.

A **combined objective** is the weighted mean of several such metrics, all in one direction:
``{"mean": ["qa.accuracy", "piqa.accuracy"], "weights": [2, 1]}`` (weights default to equal). Given alone as
``objectives`` it is the run's one objective, so that tournament selection and CMA-ES weigh every benchmark
instead of comparing them lexicographically (where the first one decides); in a list it is one objective
among others (NSGA-II).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .metrics import METRIC_DIRECTIONS

__all__ = ["Objective", "Term", "parse_objectives", "METRIC_DIRECTIONS", "SINGLE"]
SINGLE = "benchmark"  # the name of the one benchmark of a run that names none


@dataclass(frozen=True)
class Term:
    """One metric of one benchmark, with its share of a combined objective (1 for a plain objective)."""

    benchmark: str
    metric: str
    share: float = 1.0


@dataclass(frozen=True)
class Objective:
    """``terms``: the metrics whose weighted mean (the shares sum to 1) is the objective's value."""

    terms: tuple[Term, ...]
    label: str

    @property
    def weight(self) -> float:
        """DEAP's fitness weight: +1 maximised, -1 minimised (every term points the same way)."""
        return METRIC_DIRECTIONS[self.terms[0].metric]

    def value(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        """The objective's value from ``{benchmark: {metric: value}}``."""
        return sum(term.share * metrics[term.benchmark][term.metric] for term in self.terms)


def _term(spec: str, benchmarks: Sequence[str], metric_names: Mapping[str, Sequence[str]] | None) -> Term:
    single = len(benchmarks) == 1
    if not isinstance(spec, str):
        raise ConfigError(f"objective {spec!r}: expected 'benchmark.metric' or {{mean: [...], weights: [...]}}")
    name, _, metric = spec.rpartition(".")
    if not name and single:
        name = benchmarks[0]
    if name not in benchmarks:
        raise ConfigError(f"objective {spec!r}: no benchmark named {name!r} (benchmarks: {', '.join(benchmarks)})")
    if metric not in METRIC_DIRECTIONS:
        raise ConfigError(f"objective {spec!r}: unknown metric {metric!r}; known: {', '.join(METRIC_DIRECTIONS)}")
    if metric_names is not None and metric not in metric_names[name]:
        where = "the benchmark" if single else f"benchmark {name!r}"
        raise ConfigError(f"objective {spec!r}: {where} does not measure {metric!r}; it measures "
                          f"{', '.join(metric_names[name])}")
    return Term(name, metric)


def _label(term: Term, single: bool) -> str:
    return term.metric if single else f"{term.benchmark}.{term.metric}"


def _combined(spec: Mapping, benchmarks: Sequence[str], metric_names) -> Objective:
    unknown = set(spec) - {"mean", "weights"}
    if unknown or not isinstance(spec.get("mean"), (list, tuple)) or not spec["mean"]:
        raise ConfigError(f"combined objective {dict(spec)!r}: expected {{mean: [benchmark.metric, ...], "
                          f"weights: [...]}}" + (f"; unknown key {sorted(unknown)[0]!r}" if unknown else ""))
    terms = [_term(item, benchmarks, metric_names) for item in spec["mean"]]
    weights = spec.get("weights") or [1.0] * len(terms)
    if len(weights) != len(terms) or not all(isinstance(w, (int, float)) and w > 0 for w in weights):
        raise ConfigError(f"combined objective: weights {list(weights)} must be {len(terms)} positive numbers, one "
                          f"per metric of mean {list(spec['mean'])}")
    directions = {METRIC_DIRECTIONS[term.metric] for term in terms}
    if len(directions) > 1:
        up = next(t for t in terms if METRIC_DIRECTIONS[t.metric] > 0)
        down = next(t for t in terms if METRIC_DIRECTIONS[t.metric] < 0)
        raise ConfigError(f"combined objective: {up.benchmark}.{up.metric} is maximised but {down.benchmark}."
                          f"{down.metric} is minimised; a mean needs metrics of one direction")
    if len({(t.benchmark, t.metric) for t in terms}) != len(terms):
        raise ConfigError(f"combined objective: mean {list(spec['mean'])} names one metric twice")
    total = float(sum(weights))
    single = len(benchmarks) == 1
    shares = tuple(Term(t.benchmark, t.metric, w / total) for t, w in zip(terms, weights))
    inside = ", ".join(_label(t, single) if spec.get("weights") is None else f"{w:g}*{_label(t, single)}"
                       for t, w in zip(terms, weights))
    return Objective(shares, f"mean({inside})")


def _plain(spec: object) -> object:
    """A validated settings object (``CombinedObjective``) as the mapping it was written as."""
    return spec.model_dump(exclude_none=True) if hasattr(spec, "model_dump") else spec


def parse_objectives(specs: Sequence[str | Mapping] | Mapping | None, benchmarks: Sequence[str],
                     metric_names: Mapping[str, Sequence[str]] | None = None) -> tuple[Objective, ...]:
    """Objectives from ``name.metric`` strings and combined ``{mean: [...], weights: [...]}`` mappings (one
    mapping alone is one objective), or the defaults, checked against the benchmarks' names and, when
    ``metric_names`` (benchmark name -> the metrics it measures) is given, against what each measures."""
    single = len(benchmarks) == 1
    specs = _plain(specs)
    if isinstance(specs, Mapping):
        specs = [specs]
    if not specs:
        specs = [metric if single else f"{name}.{metric}" for name in benchmarks for metric in ("accuracy", "loss")]
    objectives = []
    for spec in map(_plain, specs):
        if isinstance(spec, Mapping):
            objectives.append(_combined(spec, benchmarks, metric_names))
        else:
            term = _term(spec, benchmarks, metric_names)
            objectives.append(Objective((term,), _label(term, single)))
    if len({o.label for o in objectives}) != len(objectives):
        raise ConfigError(f"objectives {list(specs)} name one objective twice")
    return tuple(objectives)
