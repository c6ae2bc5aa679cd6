"""``toolbox.map`` for scoring: the population is scored at once, each merge once per run.

Calls with ``toolbox.evaluate`` receive every individual that needs a score. Genomes are keyed by their
decoded plan, so two genomes that build the same merge are scored once. The plans new to the cache are
sorted (neighbours share the longest prefixes) and cut into contiguous shares of about equal cost
(:mod:`.shares`), one task each, for ``base_map``: the builtin map, SCOOP's ``futures.map``, a process
pool's or Ray's map. A genome that decodes to
no merge gets the worst fitness here, with a warning, and travels nowhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from ..distributed import map_workers, min_shares, uses_ray, uses_scoop
from ..errors import InvalidGenomeError
from .cheap import EXACT
from .evaluator import Evaluator, score_chunk, worst_fitness
from .items import ItemScores
from .shares import balanced_shares

__all__ = ["CachedMap", "SamePlan", "Failure"]

log = logging.getLogger(__name__)


@dataclass
class Failure:
    genome: list
    error: str


def _heartbeat_listener(base_map: Callable):
    """The SCOOP root's heartbeat listener when ``base_map`` maps over running SCOOP workers, else None."""
    if not uses_scoop(base_map):
        return None
    import scoop

    if not getattr(scoop, "IS_RUNNING", False) or not getattr(scoop, "IS_ORIGIN", False):
        return None
    from ..distributed.heartbeats import root_listener

    return root_listener()


class SamePlan:
    """Hall-of-fame similarity: two individuals are the same when they decode to the same merge."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def key(self, genome: list) -> object:
        try:
            return self.evaluator.decode(genome)
        except InvalidGenomeError:
            return ("invalid", tuple(genome))

    def __call__(self, a: list, b: list) -> bool:
        return self.key(a) == self.key(b)


class CachedMap:
    """See the module docstring. ``items`` holds, per merge scored, its :class:`~.items.ItemScores` on each
    benchmark (for paired comparisons); ``last_failures`` lists the genomes whose scoring raised in the last call;
    ``processes`` the process ids that scored; ``data_loads`` the benchmark transfers each received.
    With ``progress``, a tqdm bar counts the candidates of each call (silent when stderr is no terminal,
    unless ``progress == "always"``)."""

    def __init__(self, evaluate: Evaluator, base_map: Callable = map) -> None:
        self.evaluate = evaluate
        self.base_map = base_map
        self.same = SamePlan(evaluate)
        self.cache: dict[object, tuple[float, ...]] = {}
        self.genomes: dict[object, list] = {}
        self.items: dict[object, dict[str, ItemScores]] = {}  # per merge scored: what it did on each item
        self.evaluations = 0
        self.processes: set[int] = set()
        self.data_loads: dict[int, int] = {}
        self.last_failures: list[Failure] = []
        self.progress = False
        self.fidelity = EXACT  # how the next calls score (set by the loop: anchors, racing)
        self.estimated: set = set()  # merges whose fitness is an estimate (anchors, or stopped by racing)
        self.stopped: set = set()  # merges racing stopped: never in a hall of fame
        self.item_scorings = 0  # benchmark items scored, over all merges
        self.last_share_seconds: list[float] = []  # what each share of the last call took where it was scored
        self.last_utilisation: float | None = None  # the workers' share of time spent scoring in the last call

    def remember(self, genome: list, values: tuple[float, ...]) -> None:
        key = self.same.key(genome)
        self.cache[key] = tuple(values)
        self.genomes.setdefault(key, list(genome))

    def __call__(self, func: Callable, individuals: Iterable) -> list:
        if getattr(func, "func", func) is not self.evaluate:  # toolbox.register wraps it in a partial
            return list(self.base_map(func, individuals))
        individuals = list(individuals)
        keys = [self.same.key(ind) for ind in individuals]
        fresh: dict[object, list] = {}
        exact = self.fidelity.exact and self.fidelity.race is None
        for key, ind in zip(keys, individuals):
            if (key not in self.cache or (exact and key in self.estimated)) and key not in fresh:
                fresh[key] = list(ind)
        for key in [key for key in fresh if isinstance(key, tuple)]:  # ("invalid", genes): no merge to score
            log.warning("invalid genome %s scored as worst", fresh[key])
            self.cache[key] = worst_fitness(self.evaluate.weights)
            self.genomes.setdefault(key, fresh.pop(key))
            self.evaluations += 1
        todo = sorted(fresh, key=lambda plan: plan.sort_key())
        workers = map_workers(self.base_map)
        shares = [[key] for key in todo] if workers is None else \
            balanced_shares(todo, workers, min_shares=min_shares(self.base_map))
        if shares:
            self._share_data()
        self.last_failures, self.last_share_seconds, self.last_utilisation = [], [], None
        tasks = [self._task(share) for share in shares]
        bar = tqdm(total=len(todo), desc="scoring", unit="candidate", leave=False,
                   disable=False if self.progress == "always" else None) if self.progress and todo else None
        in_process = self.base_map is map and bar is not None and hasattr(self.evaluate, "score_plans")
        if in_process:  # the bar moves per candidate; elsewhere per share
            self.evaluate.on_scored = lambda: bar.update(1)
        started = time.perf_counter()
        try:
            self._collect(shares, self.base_map(score_chunk, tasks), fresh, None if in_process else bar)
            self.note_utilisation(workers, time.perf_counter() - started)
        finally:
            if in_process:
                self.evaluate.on_scored = None
            if bar is not None:
                bar.close()
        self.evaluations += len(todo)
        return [self.cache[key] for key in keys]

    def note_utilisation(self, workers: int | None, seconds: float) -> None:
        """``last_utilisation``: the share of the workers' time in the last ``seconds`` that went to scoring
        (the shares' own seconds over workers x ``seconds``; 1.0 when no worker waited, None when nothing
        was scored)."""
        busy = sum(self.last_share_seconds)
        self.last_utilisation = min(1.0, busy / max(1e-9, (workers or len(self.last_share_seconds)) * seconds)) \
            if busy else None

    def _share_data(self) -> None:
        """The benchmark (and in-memory sources) where the map's workers read them."""
        if self.base_map is not map:
            if uses_ray(self.base_map):
                self.base_map.start()  # Ray's object store takes the benchmark
            self.evaluate.share(use_scoop=uses_scoop(self.base_map), use_ray=uses_ray(self.base_map))

    def _task(self, share: list) -> tuple:
        """What scores ``share`` where the map runs it: each SCOOP share says while it is scored, so that a
        dead worker's share is re-sent."""
        beats = _heartbeat_listener(self.base_map)
        fidelity = self.fidelity if beats is None else \
            replace(self.fidelity, heartbeat=(beats.address, beats.new_token()))
        return (self.evaluate, share, fidelity)

    # -- one candidate at a time: the steady-state loop ----------------------------------------------------
    def known(self, individual: list) -> tuple[object, tuple[float, ...] | None]:
        """``(key, fitness)``: the fitness the cache holds for ``individual``'s merge, or None (an invalid
        genome gets the worst, here)."""
        key = self.same.key(individual)
        if isinstance(key, tuple) and key not in self.cache:
            log.warning("invalid genome %s scored as worst", list(individual))
            self.cache[key] = worst_fitness(self.evaluate.weights)
            self.genomes.setdefault(key, list(individual))
            self.evaluations += 1
        return key, self.cache.get(key)

    def task(self, key: object) -> tuple:
        """The task (for :func:`~.evaluator.score_chunk`) that scores the merge ``key`` alone."""
        self._share_data()
        return self._task([key])

    def accept(self, key: object, genome: list, results: list) -> tuple[float, ...]:
        """Take a finished :meth:`task`'s results into the cache (failures into ``last_failures``, seconds
        into ``last_share_seconds``); return the fitness."""
        self._collect([[key]], [results], {key: list(genome)}, None)
        self.evaluations += 1
        return self.cache[key]

    def _collect(self, shares: list, results, fresh: dict, bar) -> None:
        for share, share_results in zip(shares, results):
            share_results = list(share_results)
            if share_results:
                self.last_share_seconds.append(share_results[0][7])
            for key, (values, error, pid, loads, items, status, scored, _) in zip(share, share_results):
                self.cache[key] = tuple(values)
                self.item_scorings += scored
                if items:
                    self.items[key] = items
                self.estimated.discard(key)
                self.stopped.discard(key)
                if status != "exact":
                    self.estimated.add(key)
                if status == "stopped":
                    self.stopped.add(key)
                self.genomes.setdefault(key, fresh[key])
                self.processes.add(pid)
                self.data_loads[pid] = loads
                if error is not None:
                    log.error("scoring genome %s failed in process %d: %s", fresh[key], pid, error)
                    self.last_failures.append(Failure(fresh[key], error.splitlines()[0]))
            if bar is not None:
                bar.update(len(share))
