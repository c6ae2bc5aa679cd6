"""CMA-ES (DEAP's ``deap.cma.Strategy``) inside :class:`~deap_llmmerge.evolve.ga.LLMMergeGA`'s loop, for the
genome families of bounded floats (``blend``, ``methods``).

Generation 0 scores every pure source and the family's seeds (a method's default recipe) as the GA does;
the strategy starts at the first seed (``blend``: equal weights) with step size ``sigma`` and draws
``population_size`` (its lambda) genomes per generation. A drawn genome outside the gene bounds is
repaired into them (clipped; a method gene rounded) and scored there; the strategy learns from the drawn
genome with the repaired one's fitness minus the squared distance of the repair (per gene, in units of
the gene's range) on the first objective, so it learns to stay inside; the logbook records each
generation's mean penalty and the step size. The strategy draws from its own generator seeded by the run,
not numpy's global state, and its whole state is in the checkpoint: a resumed run ends as an uninterrupted
one. Crossover, mutation and elitism rates do not apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from deap import cma

__all__ = ["SeededStrategy", "CMAES"]

_STATE = ("centroid", "sigma", "pc", "ps", "C", "diagD", "B", "BD", "cond", "update_count")


class SeededStrategy(cma.Strategy):
    """``deap.cma.Strategy`` whose draws come from its own ``numpy.random.Generator``."""

    def __init__(self, centroid, sigma: float, rng: np.random.Generator, **params: object) -> None:
        super().__init__(centroid, sigma, **params)
        self.rng = rng

    def generate(self, ind_init: Callable) -> list:
        drawn = self.rng.standard_normal((self.lambda_, self.dim))
        return [ind_init(x) for x in self.centroid + self.sigma * np.dot(drawn, self.BD.T)]


def _json(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else float(value) if isinstance(value, np.floating) \
        else value


class CMAES:
    """The strategy, the gene bounds and what the last generation's repairs cost."""

    def __init__(self, ga, sigma: float) -> None:
        evaluator = ga.evaluator
        low, up, choices = evaluator.family.bounds(evaluator.space)
        self.low, self.up, self.choices = np.asarray(low, float), np.asarray(up, float), list(choices)
        self.container = type(ga.toolbox.pure(source=0))  # the run's individual class
        self.seeds = evaluator.family.seeds(self.container, evaluator.space) or \
            [self.container([1.0 / evaluator.space.n_sources] * len(low))]
        rng = np.random.default_rng(0 if ga.seed is None else ga.seed)
        self.strategy = SeededStrategy([float(g) for g in self.seeds[0]], sigma, rng, lambda_=ga.population_size)
        self.penalty = 0.0

    def first(self, ga) -> list:
        """Generation 0: every pure source and the seeds."""
        return [ga.toolbox.pure(source=k) for k in range(ga.evaluator.space.n_sources)] + \
            [ga.toolbox.clone(seed) for seed in self.seeds]

    def repair(self, drawn: np.ndarray) -> tuple[list, float]:
        inside = np.clip(drawn, self.low, self.up)
        for i in self.choices:
            inside[i] = float(int(round(inside[i])))
        span = np.where(self.up > self.low, self.up - self.low, 1.0)
        return [float(g) if i not in self.choices else int(g) for i, g in enumerate(inside)], \
            float((((drawn - inside) / span) ** 2).sum())

    def step(self, ga) -> tuple[int, list]:
        """Draw, repair and score one generation, then update the strategy; ``(evaluations, scored)``."""
        container = self.container
        drawn = self.strategy.generate(np.asarray)
        repaired, penalties = zip(*(self.repair(x) for x in drawn))
        population = [container(genes) for genes in repaired]
        evaluations = ga._score(population, ga.generation + 1)
        shadows = []
        weight = ga.evaluator.weights[0]
        for x, ind, penalty in zip(drawn, population, penalties):
            shadow = container(x.tolist())
            values = list(ind.fitness.values)
            if math.isfinite(values[0]):
                values[0] -= weight * penalty
            shadow.fitness.values = tuple(values)
            shadows.append(shadow)
        self.strategy.update(shadows)
        self.penalty = float(np.mean(penalties))
        ga.population[:] = population
        return evaluations, population

    def record(self) -> dict:
        return {"sigma": float(self.strategy.sigma), "penalty": self.penalty}

    def state(self) -> dict:
        return {"strategy": {name: _json(getattr(self.strategy, name)) for name in _STATE},
                "rng": self.strategy.rng.bit_generator.state, "penalty": self.penalty}

    def restore(self, state: dict) -> None:
        for name, value in state["strategy"].items():
            setattr(self.strategy, name, np.asarray(value) if isinstance(value, list) else value)
        self.strategy.rng.bit_generator.state = state["rng"]
        self.penalty = state["penalty"]
