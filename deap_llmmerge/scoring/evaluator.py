"""Scoring merge plans: the picklable fitness function and its per-process state.

An :class:`Evaluator` pickles to a few kilobytes: the sources travel as paths, the benchmark as a reference
(:mod:`~deap_llmmerge.distributed.transport`), never as tensors, so a task carries only plans. Each process
builds its state once (source pool, skeleton model, merge engine, benchmark on the device, batch size) and
keeps it while evaluators of that run arrive; in the process that made the evaluator the state is dropped
with it. A genome is decoded once, in the process that made the evaluator (:meth:`Evaluator.decode`): the
fitness cache, the hall of fame, the diversity figure and the workers all read that plan.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import shutil
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..devices import out_of_memory, resolve_device
from ..distributed.heartbeats import beating
from ..distributed.private_temp import private_temp_dir
from ..distributed.transport import DataRef, read_data, share_data
from ..distributed.worker import worker_device
from ..errors import BenchmarkDataError, InvalidGenomeError
from ..genomes import GenomeFamily, GenomeSpace
from ..models.engine import MergeEngine
from ..models.loading import no_progress_bars
from ..models.plans import MergePlan
from ..models.sources import SourcePool
from .anchors import calibrate_estimates
from .benchmarks import BenchmarkData
from .cheap import EXACT, Fidelity, ItemSets, Outcome, score_raced
from .items import ItemScores, item_of_rows, item_scores
from .metrics import Metric, benchmark_items
from .objectives import Objective
from .population import PopulationScorer, default_memory_budget
from .settings import ScoringSettings

__all__ = ["Evaluator", "score_chunk", "worst_fitness", "DATA_LOADS"]

log = logging.getLogger(__name__)

_LOCAL: dict[str, tuple[SourcePool, dict[str, BenchmarkData]]] = {}  # in the process that made the evaluator
_STATES: OrderedDict[str, _State] = OrderedDict()
_POOLS: dict[tuple, SourcePool] = {}
_DATA: dict[str, BenchmarkData] = {}
_TOKENS = itertools.count()
_KEEP_STATES = 2
_KEEP_PLANS = 4096
DATA_LOADS = {"count": 0}  # benchmark transfers received by this process (a worker should see one per run)


def worst_fitness(weights: Sequence[float]) -> tuple[float, ...]:
    """The worst value of every objective: -inf where larger is better, +inf where smaller is."""
    return tuple(-math.inf if w > 0 else math.inf for w in weights)


@dataclass
class _State:
    pool: SourcePool
    engine: MergeEngine
    scorer: PopulationScorer
    benchmarks: dict[str, BenchmarkData]
    sets: ItemSets


def _drop(token: str) -> None:
    _LOCAL.pop(token, None)
    _STATES.pop(token, None)
    shutil.rmtree(_saved_sources(token), ignore_errors=True)


def _saved_sources(token: str) -> Path:
    return private_temp_dir() / f"sources-{token}"


class Evaluator:
    """``evaluator(genome) -> fitness values``: decode, merge in place, score on the benchmarks."""

    on_scored = None  # called after each candidate scored in this process (the serial run's progress bar)

    def __init__(self, pool: SourcePool, benchmarks: dict[str, BenchmarkData], family: GenomeFamily,
                 space: GenomeSpace, objectives: Sequence[Objective], scoring: ScoringSettings | None = None,
                 metrics: dict[str, Metric] | None = None, savings: bool = True) -> None:
        self.sources = tuple((source.name, source.path) for source in pool.sources)
        self.base = None if pool.base is None or pool.base_index < pool.num_sources else \
            (pool.base.name, pool.base.path)
        self.in_memory = any(source.model is not None for source in pool.entries)
        self.trust_remote_code = pool.trust_remote_code
        self.family = family
        self.space = space
        self.objectives = tuple(objectives)
        self.weights = tuple(o.weight for o in self.objectives)
        self.scoring = scoring = scoring or ScoringSettings()
        self.device = str(resolve_device(scoring.device))
        self.metrics = metrics
        self.savings = savings
        self.token = f"{os.getpid()}-{next(_TOKENS)}-{time.time_ns()}"
        self.data_refs = {name: DataRef(data.content_hash()) for name, data in benchmarks.items()}
        self.items = {name: int(item_of_rows(data).max()) + 1 for name, data in benchmarks.items()}
        self.kinds = {name: data.kind for name, data in benchmarks.items()}
        self.anchors: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per benchmark: item positions, weights
        self.calibration: dict[str, tuple[float, float, float]] = {}  # per benchmark: calibrated accuracy
        self._plans: OrderedDict[tuple, MergePlan | InvalidGenomeError] = OrderedDict()
        _LOCAL[self.token] = (pool, dict(benchmarks))
        weakref.finalize(self, _drop, self.token)

    # -- pickling: only references travel ------------------------------------------------------------------
    def __getstate__(self) -> dict:
        self.share()
        return {key: value for key, value in self.__dict__.items() if key not in ("_plans", "on_scored")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._plans = OrderedDict()

    def share(self, use_scoop: bool = False, use_ray: bool = False) -> None:
        """Make this evaluator loadable in another process: the benchmarks where workers read them (and SCOOP
        shared constants with ``use_scoop``, Ray's object store with ``use_ray``), in-memory source models
        saved as safetensors folders."""
        local = _LOCAL.get(self.token)
        if local is None:  # a copy in a worker: already shared
            return
        pool, benchmarks = local
        for name, data in benchmarks.items():
            self.data_refs[name] = share_data(self.data_refs[name], data.to_dict, use_scoop, use_ray)
        if self.in_memory:
            folder = _saved_sources(self.token)
            paths = []
            for k, entry in enumerate(pool.entries):
                if entry.model is None:  # a path already
                    paths.append((entry.name, entry.path))
                    continue
                target = folder / f"source-{k}"
                if not target.exists():
                    with no_progress_bars():
                        entry.model.save_pretrained(target)
                paths.append((entry.name, target))
            self.sources = tuple(paths[:pool.num_sources])
            self.base = paths[pool.num_sources] if len(paths) > pool.num_sources else None
            self.in_memory = False

    # -- the state of this process -----------------------------------------------------------------------
    @property
    def state(self) -> _State:
        """This process's pool, engine, scorer and benchmarks, built on first use."""
        state = _STATES.get(self.token)
        if state is None:
            state = self._build_state()
            _STATES[self.token] = state
            while len(_STATES) > _KEEP_STATES and self.token not in _LOCAL:
                _STATES.popitem(last=False)
        _STATES.move_to_end(self.token)
        return state

    def prepare(self) -> _State:
        """Build this process's state now (sources mapped, skeleton and benchmarks on the device) rather
        than at the first evaluation."""
        return self.state

    def _pool(self) -> SourcePool:
        local = _LOCAL.get(self.token)
        if local is not None:
            return local[0]
        key = (self.sources, self.base, self.trust_remote_code)
        if key not in _POOLS:
            _POOLS.clear()  # one run's sources at a time per worker
            sources = [{"path": path, "name": name} for name, path in self.sources]
            base = None if self.base is None else {"path": self.base[1], "name": self.base[0]}
            _POOLS[key] = SourcePool(sources, trust_remote_code=self.trust_remote_code, base=base)
        return _POOLS[key]

    def _benchmarks(self) -> dict[str, BenchmarkData]:
        local = _LOCAL.get(self.token)
        if local is not None:
            return local[1]
        return {name: _fetch(ref) for name, ref in self.data_refs.items()}

    def _build_state(self) -> _State:
        device = worker_device(torch.device(self.device), self.token)
        pool = self._pool()
        skeleton = pool.new_skeleton().to(device).eval()
        if device.type != "cpu":
            pool.move_to(device)
        options = {name: dict(values) for name, values in self.space.method_options}
        engine = MergeEngine(pool, skeleton, options)
        benchmarks = {name: data.to(device) for name, data in self._benchmarks().items()}
        memory = self.scoring.score_memory_mb
        budget = memory * 2**20 if memory is not None else default_memory_budget(device)
        scorer = PopulationScorer(engine, benchmarks, self.scoring.batch_size, budget, self.metrics, self.savings)
        scorer.check_savings(self.family.decode(self.family.pure(list, 0, self.space), self.space))
        return _State(pool, engine, scorer, benchmarks, ItemSets(scorer))

    # -- scoring -------------------------------------------------------------------------------------------
    def decode(self, genome: Sequence) -> MergePlan:
        """``genome``'s plan, decoded once per distinct genome in this process (InvalidGenomeError when it
        decodes to none)."""
        key = tuple(genome)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = self.family.decode(genome, self.space)
            except InvalidGenomeError as exc:
                plan = exc
            self._plans[key] = plan
            if len(self._plans) > _KEEP_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        if isinstance(plan, InvalidGenomeError):
            raise InvalidGenomeError(str(plan))
        return plan

    def fitness(self, metrics: dict[str, dict[str, float]], plan: MergePlan) -> tuple[float, ...]:
        values = tuple(o.value(metrics) for o in self.objectives)
        if not all(math.isfinite(v) for v in values):
            log.warning("a merge gave non-finite metrics %s; scored as worst (plan %s)", values, plan.to_dict())
            return worst_fitness(self.weights)
        return values

    def score_plans(self, plans: Sequence[MergePlan], fidelity: Fidelity = EXACT) -> list[tuple]:
        """``(fitness, error or None, {benchmark: ItemScores}, status, items scored)`` of each plan, scored at
        once (shared prefixes) at ``fidelity`` (:mod:`.cheap`); ``status`` is ``exact`` (every item),
        ``estimate`` (anchors, or racing to the end of them) or ``stopped`` (racing). Only exact scores keep
        item scores. A plan the engine refuses gets the worst fitness with a warning; any other failure also
        travels as text."""
        results: list = [None] * len(plans)

        def failed(index: int, exc: Exception) -> None:
            if isinstance(exc, InvalidGenomeError):
                log.warning("invalid merge scored as worst: %s", exc)
                results[index] = (worst_fitness(self.weights), None, {}, "exact", 0)
                return
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            results[index] = (worst_fitness(self.weights), f"{type(exc).__name__}: {exc}\n{text}", {}, "exact", 0)

        if not plans:
            return results
        state = self.state
        everything = sum(self.items.values())
        chosen = None if fidelity.exact or not self.anchors else self.anchors
        if fidelity.race is not None:
            signs = [1.0 if w > 0 else -1.0 for w in self.weights]
            chosen = chosen or {name: (np.arange(n), np.ones(n)) for name, n in self.items.items()}
            outcomes = score_raced(plans, state.sets, chosen, fidelity.race, self.objectives, signs, failed)
        else:
            scorer = state.scorer if chosen is None else state.sets.scorer(chosen)
            count = everything if chosen is None else sum(len(items) for items, _ in chosen.values())
            scorer.on_scored = self.on_scored
            try:
                weights = None if chosen is None else \
                    {name: torch.as_tensor(w, dtype=torch.float64) for name, (_, w) in chosen.items()}
                outcomes = [None if found is None else Outcome(found[0], found[1], count, weights=weights)
                            for found in scorer.score(plans, failed)]
            finally:
                scorer.on_scored = None
        for index, outcome in enumerate(outcomes):
            if outcome is None:
                continue
            exact = outcome.scored == everything and not outcome.stopped
            items = {name: item_scores(table, self.kinds[name]) for name, table in outcome.tables.items()} if exact \
                else {}
            if not exact and not outcome.stopped and chosen is self.anchors:
                calibrate_estimates(outcome.metrics, outcome.tables, outcome.weights, self.calibration, self.kinds)
            status = "exact" if exact else "stopped" if outcome.stopped else "estimate"
            results[index] = (self.fitness(outcome.metrics, plans[index]), None, items, status, outcome.scored)
        return results

    def __call__(self, genome: Sequence) -> tuple[float, ...]:
        try:
            plan = self.decode(genome)
        except InvalidGenomeError as exc:
            log.warning("invalid genome %s scored as worst: %s", list(genome), exc)
            return worst_fitness(self.weights)
        values, error, *_ = self.score_plans([plan])[0]
        if error is not None:
            raise RuntimeError(error.splitlines()[0])
        return values

    def merged_model(self, genome: Sequence) -> nn.Module:
        """The skeleton holding ``genome``'s merge; it changes with the next evaluation."""
        return self.state.engine.apply(self.decode(genome))

    def independent_model(self, genome: Sequence) -> nn.Module:
        """A copy of the merged model that later evaluations do not change."""
        return copy.deepcopy(self.merged_model(genome))

    def measure(self, model: nn.Module, data: BenchmarkData) -> dict[str, float]:
        """The plain path's metrics of ``model`` on ``data``; out of memory, the batch size (kept for the
        rest of the run) is halved down to 1."""
        return self.measure_items(model, data)[0]

    def measure_items(self, model: nn.Module, data: BenchmarkData) -> tuple[dict[str, float], ItemScores]:
        """:meth:`measure`, and what ``model`` did on each item of ``data``."""
        scorer = self.state.scorer
        while True:
            try:
                return benchmark_items(model, data, scorer.batch_size)
            except Exception as exc:
                if not (out_of_memory(exc) and scorer.halve_batch_size()):
                    raise


def _fetch(ref: DataRef) -> BenchmarkData:
    """A benchmark by reference, once per process, checked against its content hash."""
    if ref.digest not in _DATA:
        data = BenchmarkData.coerce(read_data(ref))
        if data.content_hash() != ref.digest:
            raise BenchmarkDataError(f"{ref.path} does not hold the run's benchmark (its content hash differs)")
        _DATA.clear()
        _DATA[ref.digest] = data
        DATA_LOADS["count"] += 1
    return _DATA[ref.digest]


def score_chunk(task: tuple) -> list[tuple]:
    """Score a share of the population where the map runs it: ``task`` is ``(evaluator, plans)`` or
    ``(evaluator, plans, fidelity)`` (:class:`~.cheap.Fidelity`: anchors, racing, and where to say, while the
    share is scored, that it is: :mod:`~deap_llmmerge.distributed.heartbeats`). Per plan ``(fitness, error,
    process id, benchmark transfers received by that process, {benchmark: ItemScores}, status, items
    scored, seconds the whole share took)``. Any failure gives the worst fitness and travels back as text with
    the worker's traceback."""
    evaluator, plans, *rest = task
    fidelity = rest[0] if rest else EXACT
    started = time.perf_counter()
    try:
        with beating(*(fidelity.heartbeat or (None, None))):
            results = evaluator.score_plans(plans, fidelity)
    except Exception as exc:  # a worker must survive a state that cannot be built
        text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        results = [(worst_fitness(evaluator.weights), text, {}, "exact", 0)] * len(plans)
    seconds = time.perf_counter() - started
    return [(values, error, os.getpid(), DATA_LOADS["count"], items, status, scored, seconds)
            for values, error, items, status, scored in results]
