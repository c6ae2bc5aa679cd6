"""Scoring genomes: the picklable fitness function and the population-level map with its cache.

Per process, an :class:`Evaluator` keeps one state: the source pool, one skeleton model on the
device, the merge engine writing into it, and the benchmark tensors on the device. Only genomes
(plain lists) and fitness tuples cross process boundaries.
"""

from __future__ import annotations

import copy
import fcntl
import itertools
import logging
import math
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import BenchmarkData
from .errors import BenchmarkDataError, ConfigError, InvalidGenomeError
from .genomes import GenomeFamily
from .merge import MergeEngine, MergePlan
from .metrics import Metric, score
from .sources import SourcePool

__all__ = ["Evaluator", "CachedMap", "Failure", "score_task", "resolve_device", "worst_fitness"]

log = logging.getLogger(__name__)

_STATES: dict[str, _State] = {}
_POOLS: dict[str, SourcePool] = {}
_TOKENS = itertools.count()


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``cpu`` / ``cuda`` / ``cuda:1``; a CUDA device that is not there is an error, not a fallback."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device (use cpu, cuda or cuda:N)") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            visible = torch.cuda.device_count()
            raise ConfigError(f"device {device!r} requested but only {visible} CUDA device(s) are visible")
    elif resolved.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported (use cpu, cuda or cuda:N)")
    return resolved


def worker_device(device: torch.device, run_token: str) -> torch.device:
    """In a SCOOP worker, plain ``cuda`` means GPU ``i mod (visible GPUs)`` for the host's i-th worker."""
    import scoop

    if device.type != "cuda" or device.index is not None or not getattr(scoop, "IS_RUNNING", False):
        return device
    counter = Path(tempfile.gettempdir()) / f"deap-llmmerge-gpu-{run_token}"
    with open(counter, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        slot = len(handle.read())
        handle.write("x")
    return torch.device("cuda", slot % torch.cuda.device_count())


def worst_fitness(weights: Sequence[float]) -> tuple[float, ...]:
    """The worst value of every objective: -inf where larger is better, +inf where smaller is."""
    return tuple(-math.inf if w > 0 else math.inf for w in weights)


@dataclass
class _State:
    pool: SourcePool
    engine: MergeEngine
    data: BenchmarkData


class Evaluator:
    """``evaluator(genome) -> fitness values``: decode, merge in place, score on the benchmark."""

    def __init__(
        self,
        pool: SourcePool,
        data: BenchmarkData,
        family: GenomeFamily,
        metrics: Sequence[Metric],
        weights: Sequence[float],
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        self._pool = pool
        self.sources = pool.sources
        self.trust_remote_code = pool.trust_remote_code
        self.part_names = pool.part_names
        self.data = data
        self.family = family
        self.metrics = tuple(metrics)
        self.weights = tuple(weights)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.token = f"{os.getpid()}-{next(_TOKENS)}-{time.time_ns()}"

    def __getstate__(self) -> dict:
        """Sources given as paths travel as paths: each worker maps the files itself, once."""
        state = dict(self.__dict__)
        if all(source.model is None for source in self.sources):
            state["_pool"] = None
        return state

    @property
    def pool(self) -> SourcePool:
        """The source pool of this process: the one given, or one built once from the source paths."""
        if self._pool is None:
            if self.token not in _POOLS:
                _POOLS[self.token] = SourcePool(self.sources, trust_remote_code=self.trust_remote_code)
            self._pool = _POOLS[self.token]
        return self._pool

    @property
    def state(self) -> _State:
        """This process's pool, skeleton and data, built on first use."""
        state = _STATES.get(self.token)
        if state is None:
            state = _STATES[self.token] = self._build_state()
        return state

    def _build_state(self) -> _State:
        self.device = worker_device(self.device, self.token)
        skeleton = self.pool.new_skeleton().to(self.device).eval()
        vocab = skeleton.get_input_embeddings().weight.shape[0]
        largest = int(self.data.input_ids.max())
        if largest >= vocab:
            raise BenchmarkDataError(f"benchmark token id {largest} is outside the models' vocabulary of {vocab}")
        data = BenchmarkData(*(t if t is None else t.to(self.device)
                               for t in (self.data.input_ids, self.data.labels, self.data.attention_mask)))
        return _State(self.pool, MergeEngine(self.pool, skeleton), data)

    def decode(self, genome: Sequence) -> MergePlan:
        return self.family.decode(genome, self.part_names, len(self.sources))

    def merged_model(self, genome: Sequence) -> nn.Module:
        """The skeleton holding ``genome``'s merge; it changes with the next evaluation."""
        return self.state.engine.apply(self.decode(genome))

    def score_model(self, model: nn.Module, data: BenchmarkData | None = None) -> tuple[float, ...]:
        """Score ``model``; out of memory, retry with half the batch (and keep that size) down to 1."""
        while True:
            try:
                return score(model, data or self.state.data, self.metrics, self.batch_size)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                log.warning("out of memory while scoring; retrying with batch size %d", self.batch_size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def __call__(self, genome: Sequence) -> tuple[float, ...]:
        try:
            model = self.merged_model(genome)
        except InvalidGenomeError as exc:
            log.warning("invalid genome %s scored as worst: %s", list(genome), exc)
            return worst_fitness(self.weights)
        values = self.score_model(model)
        if not all(math.isfinite(v) for v in values):
            log.warning("genome %s gave non-finite metrics %s; scored as worst", list(genome), values)
            return worst_fitness(self.weights)
        return values

    def independent_model(self, genome: Sequence) -> nn.Module:
        """A copy of the merged model that later evaluations do not change."""
        return copy.deepcopy(self.merged_model(genome))


def score_task(task: tuple[Evaluator, list]) -> tuple[tuple[float, ...], str | None, int]:
    """Score one genome where the map runs it: ``(values, error or None, process id)``.

    Any exception gives the worst fitness and travels back as text with the worker's traceback.
    """
    evaluator, genome = task
    try:
        return evaluator(genome), None, os.getpid()
    except Exception as exc:  # a worker must survive any one bad candidate
        return worst_fitness(evaluator.weights), f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", os.getpid()


@dataclass
class Failure:
    genome: list
    error: str


class CachedMap:
    """``toolbox.map`` for scoring: every genome is scored once per run, the rest is a lookup.

    Calls with ``evaluate`` receive the whole batch of individuals that need a score; duplicates and
    genomes seen before are answered from the cache, the others go as ``(evaluator, genome)`` tasks to
    ``base_map`` (the builtin map, SCOOP's ``futures.map`` or a pool's ``map``). A genome whose scoring
    raised gets the worst fitness and is listed in ``last_failures``. Other functions pass straight through.
    With ``progress``, a tqdm bar counts the candidates of each call (silent when stderr is no terminal).
    """

    def __init__(self, evaluate: Evaluator, base_map: Callable = map) -> None:
        self.evaluate = evaluate
        self.base_map = base_map
        self.cache: dict[tuple, tuple[float, ...]] = {}
        self.evaluations = 0
        self.processes: set[int] = set()
        self.last_failures: list[Failure] = []
        self.progress = False

    def __call__(self, func: Callable, individuals: Iterable) -> list:
        if getattr(func, "func", func) is not self.evaluate:  # toolbox.register wraps it in a partial
            return list(self.base_map(func, individuals))
        keys = [tuple(ind) for ind in individuals]
        todo = list(dict.fromkeys(key for key in keys if key not in self.cache))
        self.last_failures = []
        results = self.base_map(score_task, [(self.evaluate, list(key)) for key in todo])
        if self.progress:
            results = tqdm(results, total=len(todo), desc="scoring", unit="candidate", leave=False, disable=None)
        for key, (values, error, pid) in zip(todo, results):
            self.cache[key] = tuple(values)
            self.processes.add(pid)
            if error is not None:
                log.error("scoring genome %s failed in process %d: %s", list(key), pid, error)
                self.last_failures.append(Failure(list(key), error.splitlines()[0]))
        self.evaluations += len(todo)
        return [self.cache[key] for key in keys]
