"""LLMMergeGA: the generational loop around the toolbox, with the names of the original design."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from deap import algorithms, tools
from torch import nn

from ..errors import ConfigError, EvaluationError, settings_from
from ..genomes import GenomeSettings
from ..models.compatibility import CompatibilityCheck, is_compatible
from ..models.sources import SourcePool
from ..scoring.cached_map import CachedMap
from ..scoring.evaluator import Evaluator
from ..scoring.metrics import Metric, calculate_accuracy, calculate_loss
from ..scoring.settings import ScoringSettings, objectives_setting
from .cheap_fitness import CheapFitness
from .cmaes import CMAES
from .measures import ModelMeasures
from .settings import EvolveSettings, GASettings
from .statistics import objective_statistics
from .steady_state import SteadyState
from .toolbox import as_benchmarks, build_toolbox

__all__ = ["LLMMergeGA", "seed_everything", "elite_count"]

log = logging.getLogger(__name__)

GenerationCallback = Callable[["LLMMergeGA", int], None]


def seed_everything(seed: int) -> None:
    """Seed python's ``random`` (DEAP's operators), numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def elite_count(elitism_rate: float, population_size: int) -> int:
    """``elitism_rate * population_size`` rounded half up, and at least one when the rate is above 0."""
    if elitism_rate <= 0:
        return 0
    return min(population_size, max(1, math.floor(elitism_rate * population_size + 0.5)))


class LLMMergeGA(ModelMeasures):
    """Evolve merges of ``llms`` scored on ``benchmark_data``.

    ``mutation_rate`` is the per-gene probability of a mutation, ``crossover_rate`` the probability
    that a pair of offspring is crossed, ``elitism_rate`` the share of the population that passes
    unchanged into the next generation (see :func:`elite_count`). With ``selection="nsga2"`` the
    population is chosen by NSGA-II from parents and offspring together (elitist by construction) and
    ``halloffame`` is the Pareto front. A candidate whose scoring raises gets the worst fitness; when
    more than ``max_failed_share`` of a generation's new candidates fail, the run stops with
    EvaluationError. The first generation holds every pure source, so the best merge found is never
    worse than the best source on the fitness data.

    ``adaptive_mutation={"threshold": 0.5, "factor": 2.0}`` multiplies the mutation rate by ``factor``
    while fewer than ``threshold`` of the population's merges are distinct. Other keywords are the genome
    family's settings (``method``, ``genome_granularity``, ``depth``, ...). This keyword form builds the
    settings groups a config holds (each validated once); :meth:`from_settings` takes them as they are.
    """

    def __init__(
        self,
        llms: Sequence[object] | SourcePool,
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
        weights: Sequence[float] | None = None,
        is_compatible: CompatibilityCheck = is_compatible,
        map: Callable = map,
        callback: GenerationCallback | None = None,
        trust_remote_code: bool = False,
        objectives: Sequence[str | Mapping] | Mapping | None = None,
        selection: str = "tournament",
        adaptive_mutation: Mapping[str, float] | None = None,
        algorithm: str = "ga",
        cmaes: Mapping[str, float] | None = None,
        score_memory_mb: int | None = None,
        fitness: Mapping[str, object] | None = None,
        base_model: object | None = None,
        loop: str = "generational",
        **genome_settings: object,
    ) -> None:
        ga = settings_from(GASettings, population_size=population_size, max_generations=max_generations,
                           crossover_rate=crossover_rate, mutation_rate=mutation_rate, elitism_rate=elitism_rate,
                           seed=seed, patience=patience, tournament_size=tournament_size,
                           halloffame_size=halloffame_size, max_failed_share=max_failed_share,
                           adaptive_mutation=adaptive_mutation, loop=loop)
        evolve = settings_from(EvolveSettings, selection=selection, ga=ga, algorithm=algorithm, cmaes=cmaes or {})
        genomes = settings_from(GenomeSettings, genome=genome, **genome_settings)
        scoring = settings_from(ScoringSettings, objectives=objectives_setting(objectives),
                                device=device, batch_size=batch_size, score_memory_mb=score_memory_mb,
                                fitness=fitness or {})
        custom = calculate_accuracy is not globals()["calculate_accuracy"] or \
            calculate_loss is not globals()["calculate_loss"]
        if custom and isinstance(benchmark_data, Mapping) and "input_ids" not in benchmark_data:
            raise ConfigError("calculate_accuracy / calculate_loss apply to one benchmark of tensors")
        pool = llms if isinstance(llms, SourcePool) else \
            SourcePool(llms, is_compatible, trust_remote_code=trust_remote_code, base=base_model)
        self._setup(pool, benchmark_data, evolve, genomes, scoring, map, callback, weights,
                    (calculate_accuracy, calculate_loss) if custom else None)

    @classmethod
    def from_settings(cls, pool: SourcePool, benchmark_data: object, evolve: EvolveSettings, genome: GenomeSettings,
                      scoring: ScoringSettings, *, map: Callable = map, callback: GenerationCallback | None = None,
                      weights: Sequence[float] | None = None) -> LLMMergeGA:
        """The GA a config's settings groups describe (a :class:`~deap_llmmerge.run.config.RunConfig` is all
        three), over a loaded source pool."""
        ga = cls.__new__(cls)
        ga._setup(pool, benchmark_data, evolve, genome, scoring, map, callback, weights, None)
        return ga

    def _setup(self, pool: SourcePool, benchmark_data: object, evolve: EvolveSettings, genome: GenomeSettings,
               scoring: ScoringSettings, base_map: Callable, callback: GenerationCallback | None,
               weights: Sequence[float] | None, custom_metrics: tuple[Metric, Metric] | None) -> None:
        settings = evolve.ga
        self.settings = settings
        self.population_size = settings.population_size
        self.max_generations = settings.max_generations
        self.crossover_rate = settings.crossover_rate
        self.mutation_rate = self.current_mutation_rate = settings.mutation_rate
        self.elitism_rate = settings.elitism_rate
        self.seed = settings.seed
        self.patience = settings.patience
        self.max_failed_share = settings.max_failed_share
        self.adaptive_mutation = None if settings.adaptive_mutation is None else settings.adaptive_mutation.model_dump()
        self.selection = evolve.selection
        self.device = scoring.device
        self.failed_evaluations = 0
        self.callback = callback
        self.custom_metrics = custom_metrics
        metrics = None if custom_metrics is None else dict(zip(("accuracy", "loss"), custom_metrics))
        self.toolbox = build_toolbox(pool, as_benchmarks(benchmark_data), evolve, genome, scoring, base_map=base_map,
                                     metrics=metrics, weights=weights)
        self.evaluator: Evaluator = self.toolbox.evaluate.func
        self.cached_map: CachedMap = self.toolbox.map.func
        self.pool = pool
        self.objectives = tuple(o.label for o in self.evaluator.objectives)
        if self.selection == "nsga2":
            self.halloffame = tools.ParetoFront(similar=self.cached_map.same)
        else:
            self.halloffame = tools.HallOfFame(settings.halloffame_size, similar=self.cached_map.same)
        self.logbook = tools.Logbook()
        self.population: list = []
        self.generation = -1
        self.improved_at = 0
        self.stats = objective_statistics(self.objectives)
        fitness = scoring.fitness
        self.cheap = CheapFitness(fitness, settings.seed) if (fitness.anchors or fitness.per_benchmark or
                                                               fitness.racing) else None
        self.steady = None
        if settings.loop == "steady_state":
            if evolve.algorithm == "cmaes" or self.cheap is not None:
                raise ConfigError("ga.loop steady_state takes the GA without fitness anchors or racing "
                                  f"(this run has {'algorithm cmaes' if evolve.algorithm == 'cmaes' else 'fitness'})")
            self.steady = SteadyState(self)
        self.cmaes = None
        if evolve.algorithm == "cmaes":
            if self.evaluator.family.bounds is None:
                raise ConfigError(f"algorithm cmaes needs a genome of bounded floats (blend, methods), not "
                                  f"{self.evaluator.family.name}")
            log.info("CMA-ES: population_size is its lambda; crossover, mutation and elitism rates do not apply")
            self.cmaes = CMAES(self, evolve.cmaes.sigma)
        extra = (["sigma", "penalty"] if self.cmaes is not None else []) + \
            (["item_scorings", "stopped"] if self.cheap is not None else [])
        self.logbook.header = ["gen", "evals", *self.objectives, "diversity", "mutation_rate", *extra, "utilisation"]
        for name in self.objectives:
            self.logbook.chapters[name].header = ["max", "mean", "min"]

    @property
    def num_elites(self) -> int:
        return 0 if self.selection == "nsga2" else elite_count(self.elitism_rate, self.population_size)

    @property
    def best(self) -> list:
        """The best individual so far: the hall of fame's first, or the Pareto front's member that is best
        on the first objective (then the next)."""
        if self.selection == "nsga2":
            return max(self.halloffame, key=lambda ind: ind.fitness.wvalues)
        return self.halloffame[0]

    def _score(self, individuals: list, generation: int) -> int:
        """Score the individuals without a valid fitness; return how many were new to the cache."""
        invalid = [ind for ind in individuals if not ind.fitness.valid]
        before = self.cached_map.evaluations
        for ind, values in zip(invalid, self.toolbox.map(self.toolbox.evaluate, invalid)):
            ind.fitness.values = values
        fresh = self.cached_map.evaluations - before
        self.count_failures(fresh, generation)
        return fresh

    def count_failures(self, fresh: int, generation: int) -> None:
        """Count the cached map's last failures among ``fresh`` new evaluations; stop the run with
        EvaluationError when they are more than ``max_failed_share`` of them."""
        failures = self.cached_map.last_failures
        self.failed_evaluations += len(failures)
        if failures and len(failures) > self.max_failed_share * fresh:
            raise EvaluationError(f"{len(failures)} of {fresh} evaluations failed in generation "
                                  f"{generation}; first: {failures[0].error}")

    def diversity(self) -> float:
        """The share of the population's merges that are distinct."""
        return len({self.cached_map.same.key(ind) for ind in self.population}) / max(1, len(self.population))

    def _adapt_mutation(self, diversity: float) -> None:
        if self.adaptive_mutation is None:
            return
        low = diversity < self.adaptive_mutation.get("threshold", 0.5)
        rate = min(1.0, self.mutation_rate * self.adaptive_mutation.get("factor", 2.0)) if low else self.mutation_rate
        if rate != self.current_mutation_rate:
            self.current_mutation_rate = rate
            evaluator = self.evaluator
            evaluator.family.register_operators(self.toolbox, evaluator.space, rate)

    def _record(self, evaluations: int, scored: list) -> None:
        """Hall of fame (or front), logbook and callback after a generation whose new candidates are ``scored``.
        The front sees every candidate scored, not only NSGA-II's survivors: an offspring dropped for its
        crowding distance may still dominate a member."""
        if self.cheap is not None and self.generation == 0:
            self.cheap.choose(self)
        stopped = self.cached_map.stopped  # racing's stopped candidates never enter the hall of fame
        scored = [ind for ind in scored if self.cached_map.same.key(ind) not in stopped]
        eligible = [ind for ind in self.population if self.cached_map.same.key(ind) not in stopped]
        if self.selection == "nsga2":
            before = {id(ind) for ind in self.halloffame}
            self.halloffame.update(scored + eligible)
            if {id(ind) for ind in self.halloffame} != before:
                self.improved_at = self.generation
        else:
            previous = self.halloffame[0].fitness.wvalues if len(self.halloffame) else None
            self.halloffame.update(scored + eligible)  # a steady-state child may have left the population
            if previous is None or self.halloffame[0].fitness.wvalues > previous:
                self.improved_at = self.generation
        diversity = self.diversity()
        self._adapt_mutation(diversity)
        self.logbook.record(gen=self.generation, evals=evaluations, diversity=diversity,
                            mutation_rate=self.current_mutation_rate, utilisation=self.cached_map.last_utilisation,
                            **self.stats.compile(self.population),
                            **(self.cmaes.record() if self.cmaes is not None else {}),
                            **(self.cheap.record(self) if self.cheap is not None else {}))
        log.info("%s", self.summary())
        if self.callback is not None:
            self.callback(self, self.generation)

    def summary(self) -> str:
        """One log line for the last generation: evaluations, each objective's max/mean/min, the best so far."""
        record = self.logbook[-1]
        stats = "; ".join(f"{name} {self.logbook.chapters[name][-1]['max']:.4g}/"
                          f"{self.logbook.chapters[name][-1]['mean']:.4g}/{self.logbook.chapters[name][-1]['min']:.4g}"
                          for name in self.objectives)
        best = ", ".join(f"{name} {value:.4g}" for name, value in zip(self.objectives, self.best.fitness.values))
        return (f"generation {record['gen']}/{self.max_generations}: {record['evals']} evaluations; max/mean/min "
                f"{stats}; best so far {best}")

    def step(self) -> None:
        """One generation. Tournament: elites pass unchanged, the rest are selected, crossed, mutated and
        scored. NSGA-II: offspring of crowded-tournament parents, then survivors from parents + offspring.
        CMA-ES: the strategy's draws, repaired into the bounds and scored (see :mod:`.cmaes`)."""
        if self.cheap is not None:
            self.cached_map.fidelity = self.cheap.fidelity(self)
        if self.cmaes is not None:
            evaluations, scored = self.cmaes.step(self)
        elif self.steady is not None:
            evaluations, scored = self.steady.step()
        elif self.selection == "nsga2":
            parents = self.toolbox.select_parents(self.population, self.population_size)
            offspring = algorithms.varAnd(parents, self.toolbox, self.crossover_rate, 1.0)
            evaluations = self._score(offspring, self.generation + 1)
            scored = offspring
            self.population[:] = self.toolbox.select(self.population + offspring, self.population_size)
        else:
            elites = [self.toolbox.clone(ind) for ind in tools.selBest(self.population, self.num_elites)]
            offspring = self.toolbox.select(self.population, self.population_size - len(elites))
            offspring = algorithms.varAnd(offspring, self.toolbox, self.crossover_rate, 1.0)
            evaluations = self._score(offspring, self.generation + 1)
            scored = offspring
            self.population[:] = elites + offspring
        if self.cheap is not None:
            self.cheap.check_drift(self, scored)
        self.generation += 1
        self._record(evaluations, scored)

    def run(self) -> list:
        """Evolve for ``max_generations`` (or until ``patience`` runs out); return the best individual."""
        if self.generation < 0:
            if self.seed is not None:
                seed_everything(self.seed)
            self.population = self.cmaes.first(self) if self.cmaes is not None else \
                self.toolbox.population(n=self.population_size)
            self.generation = 0
            if self.steady is not None:
                evaluations, scored = self.steady.first(self.population)
            else:
                evaluations, scored = self._score(self.population, 0), list(self.population)
            if self.selection == "nsga2":
                self.population[:] = self.toolbox.select(self.population, self.population_size)
            self._record(evaluations, scored)
        while self.generation < self.max_generations:
            if self.patience is not None and self.generation - self.improved_at >= self.patience:
                log.info("stopping early: no improvement for %d generations", self.patience)
                break
            self.step()
        if self.cheap is not None:
            self.cheap.finish(self)
        return self.best

    def merge_layers(self, individual: Sequence) -> nn.Module:
        """The whole merged model of ``individual`` (every part, not only its layers: the original design's
        name), a copy that later evaluations do not change; ready to use or ``save_pretrained``."""
        return self.evaluator.independent_model(individual)
