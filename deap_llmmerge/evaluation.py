"""Scoring genomes: the picklable fitness function and the population-level map with its cache.

Per process, an :class:`Evaluator` keeps one state: the source pool, one skeleton model on the
device, the merge engine writing into it, and the benchmark tensors on the device. Only genomes
(plain lists) and fitness tuples cross process boundaries.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .data import BenchmarkData
from .errors import BenchmarkDataError, ConfigError, InvalidGenomeError
from .genomes import GenomeFamily
from .merge import MergeEngine, MergePlan
from .metrics import Metric, score
from .sources import SourcePool

__all__ = ["Evaluator", "CachedMap", "resolve_device", "worst_fitness"]

log = logging.getLogger(__name__)

_STATES: dict[str, _State] = {}
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
        self.pool = pool
        self.data = data
        self.family = family
        self.metrics = tuple(metrics)
        self.weights = tuple(weights)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.token = f"{os.getpid()}-{next(_TOKENS)}"

    @property
    def state(self) -> _State:
        """This process's pool, skeleton and data, built on first use."""
        state = _STATES.get(self.token)
        if state is None:
            state = _STATES[self.token] = self._build_state()
        return state

    def _build_state(self) -> _State:
        skeleton = self.pool.new_skeleton().to(self.device).eval()
        vocab = skeleton.get_input_embeddings().weight.shape[0]
        largest = int(self.data.input_ids.max())
        if largest >= vocab:
            raise BenchmarkDataError(f"benchmark token id {largest} is outside the models' vocabulary of {vocab}")
        data = BenchmarkData(*(t if t is None else t.to(self.device)
                               for t in (self.data.input_ids, self.data.labels, self.data.attention_mask)))
        return _State(self.pool, MergeEngine(self.pool, skeleton), data)

    def decode(self, genome: Sequence) -> MergePlan:
        return self.family.decode(genome, self.pool.part_names, self.pool.num_sources)

    def merged_model(self, genome: Sequence) -> nn.Module:
        """The skeleton holding ``genome``'s merge; it changes with the next evaluation."""
        return self.state.engine.apply(self.decode(genome))

    def score_model(self, model: nn.Module, data: BenchmarkData | None = None) -> tuple[float, ...]:
        return score(model, data or self.state.data, self.metrics, self.batch_size)

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


class CachedMap:
    """``toolbox.map`` for scoring: every genome is scored once per run, the rest is a lookup.

    Calls with ``evaluate`` receive the whole batch of individuals that need a score; duplicates and
    genomes seen before are answered from the cache, the others go as plain lists to ``base_map``
    (the builtin map, SCOOP's ``futures.map`` or a pool's ``map``). Other functions pass straight through.
    """

    def __init__(self, evaluate: Callable, base_map: Callable = map) -> None:
        self.evaluate = evaluate
        self.base_map = base_map
        self.cache: dict[tuple, tuple[float, ...]] = {}
        self.evaluations = 0

    def __call__(self, func: Callable, individuals: Iterable) -> list:
        if getattr(func, "func", func) is not self.evaluate:  # toolbox.register wraps it in a partial
            return list(self.base_map(func, individuals))
        keys = [tuple(ind) for ind in individuals]
        todo = list(dict.fromkeys(key for key in keys if key not in self.cache))
        for key, values in zip(todo, self.base_map(func, [list(key) for key in todo])):
            self.cache[key] = tuple(values)
        self.evaluations += len(todo)
        return [self.cache[key] for key in keys]
