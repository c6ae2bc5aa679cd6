"""LLMMergeGA: the generational loop around the toolbox, with the names of the original design."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from deap import algorithms, tools
from torch import nn

from .data import BenchmarkData
from .errors import ConfigError, EvaluationError
from .evaluation import CachedMap, Evaluator
from .metrics import Metric, calculate_accuracy, calculate_loss, score
from .sources import CompatibilityCheck, SourcePool, is_compatible
from .toolbox import DEFAULT_WEIGHTS, make_toolbox

__all__ = ["LLMMergeGA", "seed_everything"]

log = logging.getLogger(__name__)

GenerationCallback = Callable[["LLMMergeGA", int], None]


def seed_everything(seed: int) -> None:
    """Seed python's ``random`` (DEAP's operators), numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)] or [math.nan]


def _max(values: Sequence[float]) -> float:
    return max(_finite(values))


def _min(values: Sequence[float]) -> float:
    return min(_finite(values))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(_finite(values)))


class _Objective:
    """Statistics key: the ``index``-th fitness value of an individual (picklable, unlike a lambda)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, individual: Sequence) -> float:
        return individual.fitness.values[self.index]


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1], got {value}")


class LLMMergeGA:
    """Evolve merges of ``llms`` scored on ``benchmark_data``.

    ``mutation_rate`` is the per-gene probability of a mutation, ``crossover_rate`` the probability
    that a pair of offspring is crossed, ``elitism_rate`` the share of the population that passes
    unchanged into the next generation. A candidate whose scoring raises gets the worst fitness; when
    more than ``max_failed_share`` of a generation's new candidates fail, the run stops with
    EvaluationError. The first generation holds every pure source, so the best merge
    found is never worse than the best source on the fitness data.
    """

    def __init__(
        self,
        llms: Sequence[object],
        benchmark_data: object,
        population_size: int = 100,
        max_generations: int = 50,
        crossover_rate: float = 0.8,
        mutation_rate: float = 0.1,
        elitism_rate: float = 0.1,
        device: str = "cpu",
        genome: str = "choice",
        seed: int | None = 0,
        *,
        batch_size: int = 32,
        patience: int | None = None,
        max_failed_share: float = 0.5,
        tournament_size: int = 3,
        halloffame_size: int = 5,
        calculate_accuracy: Metric = calculate_accuracy,
        calculate_loss: Metric = calculate_loss,
        weights: Sequence[float] = DEFAULT_WEIGHTS,
        is_compatible: CompatibilityCheck = is_compatible,
        map: Callable = map,
        callback: GenerationCallback | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if population_size < 2:
            raise ConfigError(f"population_size must be >= 2, got {population_size}")
        if max_generations < 0:
            raise ConfigError(f"max_generations must be >= 0, got {max_generations}")
        for name, rate in (("crossover_rate", crossover_rate), ("mutation_rate", mutation_rate),
                           ("elitism_rate", elitism_rate)):
            _check_rate(name, rate)
        _check_rate("max_failed_share", max_failed_share)
        if patience is not None and patience < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        self.population_size = population_size
        self.max_generations = max_generations
        self.crossover_rate = crossover_rate
        self.mutation_rate = mutation_rate
        self.elitism_rate = elitism_rate
        self.device = device
        self.seed = seed
        self.patience = patience
        self.max_failed_share = max_failed_share
        self.failed_evaluations = 0
        self.callback = callback
        self.objectives = ("accuracy", "loss")
        self.pool = SourcePool(llms, is_compatible, trust_remote_code=trust_remote_code)
        self.toolbox = make_toolbox(
            self.pool, benchmark_data, genome, device=device, batch_size=batch_size,
            metrics=(calculate_accuracy, calculate_loss), weights=weights, mutation_rate=mutation_rate,
            tournament_size=tournament_size, base_map=map,
        )
        self.evaluator: Evaluator = self.toolbox.evaluate.func
        self.cached_map: CachedMap = self.toolbox.map.func
        self.halloffame = tools.HallOfFame(halloffame_size)
        self.logbook = tools.Logbook()
        self.population: list = []
        self.generation = -1
        self.improved_at = 0
        self.stats = tools.MultiStatistics(
            **{name: tools.Statistics(_Objective(i)) for i, name in enumerate(self.objectives)}
        )
        for function in (_max, _mean, _min):
            self.stats.register(function.__name__.strip("_"), function)
        self.logbook.header = ["gen", "evals", *self.objectives]
        for name in self.objectives:
            self.logbook.chapters[name].header = ["max", "mean", "min"]

    @property
    def num_elites(self) -> int:
        return round(self.elitism_rate * self.population_size)

    def _score(self, individuals: list, generation: int) -> int:
        """Score the individuals without a valid fitness; return how many were new to the cache."""
        invalid = [ind for ind in individuals if not ind.fitness.valid]
        before = self.cached_map.evaluations
        for ind, values in zip(invalid, self.toolbox.map(self.toolbox.evaluate, invalid)):
            ind.fitness.values = values
        fresh = self.cached_map.evaluations - before
        failures = self.cached_map.last_failures
        self.failed_evaluations += len(failures)
        if failures and len(failures) > self.max_failed_share * fresh:
            raise EvaluationError(f"{len(failures)} of {fresh} evaluations failed in generation "
                                  f"{generation}; first: {failures[0].error}")
        return fresh

    def _record(self, evaluations: int) -> None:
        previous = self.halloffame[0].fitness.wvalues if len(self.halloffame) else None
        self.halloffame.update(self.population)
        if previous is None or self.halloffame[0].fitness.wvalues > previous:
            self.improved_at = self.generation
        self.logbook.record(gen=self.generation, evals=evaluations, **self.stats.compile(self.population))
        log.info("generation %d: %s", self.generation, self.logbook.stream)
        if self.callback is not None:
            self.callback(self, self.generation)

    def step(self) -> None:
        """One generation: elites pass unchanged, the rest are selected, crossed, mutated and scored."""
        elites = [self.toolbox.clone(ind) for ind in tools.selBest(self.population, self.num_elites)]
        offspring = self.toolbox.select(self.population, self.population_size - len(elites))
        offspring = algorithms.varAnd(offspring, self.toolbox, self.crossover_rate, 1.0)
        evaluations = self._score(offspring, self.generation + 1)
        self.population[:] = elites + offspring
        self.generation += 1
        self._record(evaluations)

    def run(self) -> list:
        """Evolve for ``max_generations`` (or until ``patience`` runs out); return the best individual."""
        if self.generation < 0:
            if self.seed is not None:
                seed_everything(self.seed)
            self.population = self.toolbox.population(n=self.population_size)
            self.generation = 0
            self._record(self._score(self.population, 0))
        while self.generation < self.max_generations:
            if self.patience is not None and self.generation - self.improved_at >= self.patience:
                log.info("stopping early: no improvement for %d generations", self.patience)
                break
            self.step()
        return self.halloffame[0]

    def merge_layers(self, individual: Sequence) -> nn.Module:
        """The merged model of ``individual``, independent of later evaluations."""
        return self.evaluator.independent_model(individual)

    def evaluate(self, model: nn.Module, data: object | None = None) -> tuple[float, ...]:
        """``(accuracy, loss)`` of ``model`` on the fitness data, or on ``data`` when given."""
        data = self.evaluator.state.data if data is None else BenchmarkData.coerce(data)
        return score(model, data, self.evaluator.metrics, self.evaluator.batch_size)

    def evaluate_accuracy(self, model: nn.Module, data: object | None = None) -> float:
        return self.evaluate(model, data)[0]

    def evaluate_loss(self, model: nn.Module, data: object | None = None) -> float:
        return self.evaluate(model, data)[1]
