"""Scoring genomes: the picklable fitness function, its per-process state, and the population-level map.

An :class:`Evaluator` pickles to a few kilobytes: the sources travel as paths, the benchmark as a reference
(a SCOOP shared constant or a file keyed by its content hash), never as tensors, so a task carries only
genomes. Each process builds its state once (source pool, skeleton model, merge engine, benchmark on the
device, batch size) and keeps it while evaluators of that run arrive; in the process that made the
evaluator the state is dropped with it.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import shutil
import tempfile
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..devices import out_of_memory, resolve_device
from ..distributed.heartbeats import beating
from ..distributed.private_temp import private_temp_dir
from ..distributed.worker import worker_device
from ..errors import BenchmarkDataError, InvalidGenomeError
from ..evolve.objectives import Objective
from ..genomes import GenomeFamily, GenomeSpace
from ..models.engine import MergeEngine
from ..models.plans import MergePlan
from ..models.sources import SourcePool
from .benchmarks import BenchmarkData
from .metrics import Metric, benchmark_metrics
from .population import PopulationScorer, default_memory_budget

__all__ = ["Evaluator", "score_chunk", "worst_fitness", "DATA_LOADS"]

log = logging.getLogger(__name__)

_LOCAL: dict[str, tuple[SourcePool, dict[str, BenchmarkData]]] = {}  # in the process that made the evaluator
_STATES: OrderedDict[str, _State] = OrderedDict()
_POOLS: dict[tuple, SourcePool] = {}
_DATA: dict[str, BenchmarkData] = {}
_SHARED: set[str] = set()  # SCOOP constants this process has set
_TOKENS = itertools.count()
_KEEP_STATES = 2
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


@dataclass(frozen=True)
class _DataRef:
    """Where a worker finds a benchmark: a SCOOP shared constant or a file, both keyed by content hash."""

    digest: str
    path: str
    scoop_key: str | None = None


def _drop(token: str) -> None:
    _LOCAL.pop(token, None)
    _STATES.pop(token, None)
    shutil.rmtree(_saved_sources(token), ignore_errors=True)


def _saved_sources(token: str) -> Path:
    return private_temp_dir() / f"sources-{token}"


def _scoop_running() -> bool:
    import scoop

    return bool(getattr(scoop, "IS_RUNNING", False))


class Evaluator:
    """``evaluator(genome) -> fitness values``: decode, merge in place, score on the benchmarks."""

    def __init__(
        self,
        pool: SourcePool,
        benchmarks: dict[str, BenchmarkData],
        family: GenomeFamily,
        space: GenomeSpace,
        objectives: Sequence[Objective],
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        metrics: dict[str, Metric] | None = None,
        memory_budget_mb: int | None = None,
        savings: bool = True,
        method_options: dict | None = None,
    ) -> None:
        self.sources = tuple((source.name, source.path) for source in pool.sources)
        self.base = None if pool.base is None or pool.base_index < pool.num_sources else \
            (pool.base.name, pool.base.path)
        self.in_memory = any(source.model is not None for source in pool.entries)
        self.trust_remote_code = pool.trust_remote_code
        self.family = family
        self.space = space
        self.objectives = tuple(objectives)
        self.weights = tuple(o.weight for o in self.objectives)
        self.device = str(resolve_device(device))
        self.batch_size = batch_size
        self.metrics = metrics
        self.memory_budget_mb = memory_budget_mb
        self.savings = savings
        self.method_options = method_options or {}
        self.token = f"{os.getpid()}-{next(_TOKENS)}-{time.time_ns()}"
        self.data_refs = {name: _DataRef(data.content_hash(), "") for name, data in benchmarks.items()}
        _LOCAL[self.token] = (pool, dict(benchmarks))
        weakref.finalize(self, _drop, self.token)

    # -- pickling: only references travel ------------------------------------------------------------------
    def __getstate__(self) -> dict:
        self.publish()
        return dict(self.__dict__)

    def publish(self, use_scoop: bool = False) -> None:
        """Make this evaluator loadable in another process: benchmark files keyed by content hash (and SCOOP
        shared constants with ``use_scoop``), in-memory source models saved as safetensors folders."""
        local = _LOCAL.get(self.token)
        if local is None:  # a copy in a worker: already published
            return
        pool, benchmarks = local
        for name, data in benchmarks.items():
            ref = self.data_refs[name]
            if not ref.path:
                path = private_temp_dir() / f"data-{ref.digest}.pt"
                if not path.exists():  # a worker checks the content against the digest when it loads it
                    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
                    with os.fdopen(handle, "wb") as file:
                        torch.save(data.to_dict(), file)
                    os.replace(partial, path)
                ref = _DataRef(ref.digest, str(path))
            if use_scoop and ref.scoop_key is None and _scoop_running():
                key = f"deap_llmmerge_data_{ref.digest}"
                if key not in _SHARED:  # a SCOOP constant is set once per run, whatever evaluator sets it
                    from scoop import shared

                    shared.setConst(**{key: data.to_dict()})
                    _SHARED.add(key)
                ref = _DataRef(ref.digest, ref.path, key)
            self.data_refs[name] = ref
        if self.in_memory:
            folder = _saved_sources(self.token)
            paths = []
            for k, entry in enumerate(pool.entries):
                if entry.model is None:  # a path already
                    paths.append((entry.name, entry.path))
                    continue
                target = folder / f"source-{k}"
                if not target.exists():
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
        engine = MergeEngine(pool, skeleton, self.method_options)
        benchmarks = {name: data.to(device) for name, data in self._benchmarks().items()}
        budget = (self.memory_budget_mb * 2**20) if self.memory_budget_mb is not None else default_memory_budget(device)
        scorer = PopulationScorer(engine, benchmarks, self.batch_size, budget, self.metrics, self.savings)
        scorer.check_savings(self.decode(self.family.pure(list, 0, self.space)))
        return _State(pool, engine, scorer, benchmarks)

    # -- scoring -------------------------------------------------------------------------------------------
    def decode(self, genome: Sequence) -> MergePlan:
        return self.family.decode(genome, self.space)

    def fitness(self, metrics: dict[str, dict[str, float]], genome: Sequence) -> tuple[float, ...]:
        values = tuple(metrics[o.benchmark][o.metric] for o in self.objectives)
        if not all(math.isfinite(v) for v in values):
            log.warning("genome %s gave non-finite metrics %s; scored as worst", list(genome), values)
            return worst_fitness(self.weights)
        return values

    def score_genomes(self, genomes: Sequence[Sequence]) -> list[tuple[tuple[float, ...], str | None]]:
        """``(fitness, error or None)`` of each genome, the population scored at once (shared prefixes).
        An invalid genome gets the worst fitness with a warning; any other failure also travels as text."""
        results: list = [None] * len(genomes)
        plans, where = [], []
        for i, genome in enumerate(genomes):
            try:
                plans.append(self.decode(genome))
                where.append(i)
            except InvalidGenomeError as exc:
                log.warning("invalid genome %s scored as worst: %s", list(genome), exc)
                results[i] = (worst_fitness(self.weights), None)

        def failed(index: int, exc: Exception) -> None:
            genome = genomes[where[index]]
            if isinstance(exc, InvalidGenomeError):
                log.warning("invalid genome %s scored as worst: %s", list(genome), exc)
                results[where[index]] = (worst_fitness(self.weights), None)
                return
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            results[where[index]] = (worst_fitness(self.weights), f"{type(exc).__name__}: {exc}\n{text}")

        if plans:
            state = self.state
            for index, metrics in enumerate(state.scorer.score(plans, failed)):
                if metrics is not None:
                    results[where[index]] = (self.fitness(metrics, genomes[where[index]]), None)
        return results

    def __call__(self, genome: Sequence) -> tuple[float, ...]:
        values, error = self.score_genomes([genome])[0]
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
        scorer = self.state.scorer
        while True:
            try:
                return benchmark_metrics(model, data, scorer.batch_size)
            except Exception as exc:
                if not (out_of_memory(exc) and scorer.halve_batch_size()):
                    raise


def _fetch(ref: _DataRef) -> BenchmarkData:
    """A benchmark by reference, once per process."""
    if ref.digest not in _DATA:
        content = None
        if ref.scoop_key is not None and _scoop_running():
            from scoop import shared

            content = shared.getConst(ref.scoop_key, timeout=300)
        if content is None:
            content = torch.load(ref.path, map_location="cpu", weights_only=True)
        data = BenchmarkData.coerce(content)
        if data.content_hash() != ref.digest:
            raise BenchmarkDataError(f"{ref.path} does not hold the run's benchmark (its content hash differs)")
        _DATA.clear()
        _DATA[ref.digest] = data
        DATA_LOADS["count"] += 1
    return _DATA[ref.digest]


def score_chunk(task: tuple) -> list[tuple[tuple[float, ...], str | None, int, int]]:
    """Score a share of the population where the map runs it: ``task`` is ``(evaluator, genomes)``, or with
    ``(address, token)`` where to say, while it is scored, that it is (see :mod:`.heartbeats`). Per genome
    ``(fitness, error, process id, benchmark transfers received by that process)``. Any failure gives the
    worst fitness and travels back as text with the worker's traceback."""
    evaluator, genomes, *beat = task
    try:
        with beating(*(beat[0] if beat else (None, None))):
            results = evaluator.score_genomes(genomes)
    except Exception as exc:  # a worker must survive a state that cannot be built
        text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        results = [(worst_fitness(evaluator.weights), text)] * len(genomes)
    return [(values, error, os.getpid(), DATA_LOADS["count"]) for values, error in results]
