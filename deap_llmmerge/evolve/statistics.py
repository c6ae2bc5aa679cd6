"""What the logbook records per generation: max, mean and min of every objective over the candidates that
scored (failed ones, at infinity, are left out)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from deap import tools

__all__ = ["objective_statistics"]


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


def objective_statistics(objectives: Sequence[str]) -> tools.MultiStatistics:
    """One chapter per objective, each with ``max``, ``mean`` and ``min``."""
    stats = tools.MultiStatistics(**{name: tools.Statistics(_Objective(i)) for i, name in enumerate(objectives)})
    for function in (_max, _mean, _min):
        stats.register(function.__name__.strip("_"), function)
    return stats
