"""The loop's side of cheap fitness (``fitness: {anchors: N, racing: true}``; :mod:`~deap_llmmerge.scoring.cheap`).

- Generation 0 is scored on the whole benchmarks; from what its candidates did on each item, anchors are
  chosen per benchmark (:mod:`~deap_llmmerge.scoring.anchors`), and later candidates are scored on them;
  accuracy is estimated calibrated (anchors' accuracy and graded scores) where that predicts better.
- **Drift.** After each generation the population's best, an estimate, is scored on the whole benchmarks; when
  its first objective's estimate was off by more than ``refresh_tolerance``, the anchors are chosen again from
  every candidate scored exactly so far (the population's bests accumulate there), and the log says so.
- **Racing** stops a candidate that cannot enter the elites (tournament: below the k-th best, k the number of
  elites, at least one; paired with that elite, item by item, when its per-item results are known) or the
  front (NSGA-II: dominated by a member); it keeps its estimate and never enters the hall of fame or front.
  CMA-ES ranks every candidate, so it is not raced.
- The hall of fame's (or front's) members are scored on the whole benchmarks before the run ends, so
  ``recipe.json`` holds exact figures.
"""

from __future__ import annotations

import logging

import numpy as np
from deap import tools

from ..scoring.anchors import anchor_count, calibrate, choose_anchors
from ..scoring.cheap import EXACT, Fidelity, Race
from ..scoring.settings import FitnessSettings

__all__ = ["CheapFitness"]

log = logging.getLogger(__name__)


class CheapFitness:
    def __init__(self, settings: FitnessSettings, seed: int | None) -> None:
        self.settings = settings
        self.seed = 0 if seed is None else seed
        self.refreshes = 0
        self.scored_before = 0

    # -- anchors -------------------------------------------------------------------------------------------
    def choose(self, ga) -> None:
        """Anchors per benchmark from every candidate scored exactly so far."""
        if self.settings.anchors is None and not self.settings.per_benchmark:
            return
        evaluator, items = ga.evaluator, ga.cached_map.items
        anchors, calibration = {}, {}
        for name, count in evaluator.items.items():
            setting = self.settings.per_benchmark.get(name, self.settings.anchors)
            wanted = anchor_count(setting, count) if setting else count
            known = [found[name] for found in items.values() if name in found]
            if wanted >= count or len(known) < 2:
                anchors[name] = (np.arange(count), np.ones(count))
                continue
            correct = np.stack([scores.correct for scores in known]).astype(np.float64)
            score = np.stack([scores.score for scores in known]).astype(np.float64)
            chosen, weights = choose_anchors(correct, score, wanted, seed=self.seed + self.refreshes)
            anchors[name] = (chosen, weights * count)  # weights in items: a whole benchmark weighs its count
            found = None if evaluator.kinds[name] == "text" else \
                calibrate(correct, score, chosen, weights, seed=self.seed + self.refreshes)
            if found is not None:
                calibration[name] = found
        evaluator.anchors = anchors
        evaluator.calibration = calibration
        log.info("anchors: %s", ", ".join(f"{name} {len(a[0])} of {evaluator.items[name]} items"
                                          for name, a in anchors.items()))

    def check_drift(self, ga, population: list) -> None:
        """Score the best estimate exactly; choose the anchors again when it was off by more than the tolerance."""
        estimated = [ind for ind in population if ga.cached_map.same.key(ind) in ga.cached_map.estimated
                     and ga.cached_map.same.key(ind) not in ga.cached_map.stopped]
        if not ga.evaluator.anchors or not estimated:
            return
        best = tools.selBest(estimated, 1)[0]
        guess = best.fitness.values[0]
        exact = self.exactly(ga, [best])[0]
        for ind in population:
            if ga.cached_map.same(ind, best):
                ind.fitness.values = exact
        if abs(exact[0] - guess) > self.settings.refresh_tolerance:
            self.refreshes += 1
            log.warning("anchors drifted: the best's %s was estimated %.4g, is %.4g; choosing them again",
                        ga.objectives[0], guess, exact[0])
            self.choose(ga)

    # -- racing and exact scores -----------------------------------------------------------------------------
    def fidelity(self, ga) -> Fidelity:
        """How the next generation's candidates are scored."""
        race = None
        if self.settings.racing and ga.cmaes is None and ga.population:
            if ga.selection == "nsga2":
                race = Race("dominance", tuple(tuple(ind.fitness.wvalues) for ind in ga.halloffame),
                            self.settings.slices, seed=self.seed)
            else:
                elite = tools.selBest(ga.population, max(1, ga.num_elites))[-1]
                items = ga.cached_map.items.get(ga.cached_map.same.key(elite)) or {}
                reference = tuple((name, scores.correct.astype(np.float64)) for name, scores in items.items()) or None
                race = Race("lexicographic", (tuple(elite.fitness.wvalues),), self.settings.slices, seed=self.seed,
                            reference=reference)
        return Fidelity(exact=not ga.evaluator.anchors, race=race)

    def exactly(self, ga, individuals: list) -> list[tuple]:
        ga.cached_map.fidelity = EXACT
        return list(ga.toolbox.map(ga.toolbox.evaluate, individuals))

    def finish(self, ga) -> None:
        """Score the hall of fame's (or front's) estimated members exactly and rank them again."""
        members = list(ga.halloffame)
        pending = [ind for ind in members if ga.cached_map.same.key(ind) in ga.cached_map.estimated]
        if not pending:
            return
        for ind, values in zip(pending, self.exactly(ga, pending)):
            ind.fitness.values = values
        ga.halloffame.clear()
        ga.halloffame.update(members)

    def record(self, ga) -> dict:
        scorings = ga.cached_map.item_scorings - self.scored_before
        self.scored_before = ga.cached_map.item_scorings
        return {"item_scorings": scorings, "stopped": len(ga.cached_map.stopped)}

    def state(self, ga) -> dict:
        keys = list(ga.cached_map.cache)
        return {"anchors": {name: [a.tolist(), w.tolist()] for name, (a, w) in ga.evaluator.anchors.items()},
                "estimated": [i for i, key in enumerate(keys) if key in ga.cached_map.estimated],
                "stopped": [i for i, key in enumerate(keys) if key in ga.cached_map.stopped],
                "item_scorings": ga.cached_map.item_scorings, "refreshes": self.refreshes,
                "scored_before": self.scored_before}

    def restore(self, ga, state: dict) -> None:
        keys = list(ga.cached_map.cache)
        ga.evaluator.anchors = {name: (np.asarray(a, dtype=np.int64), np.asarray(w, dtype=np.float64))
                                for name, (a, w) in state["anchors"].items()}
        ga.cached_map.estimated = {keys[i] for i in state["estimated"]}
        ga.cached_map.stopped = {keys[i] for i in state["stopped"]}
        ga.cached_map.item_scorings = state["item_scorings"]
        self.refreshes, self.scored_before = state["refreshes"], state["scored_before"]
