"""Variation operators shared by the fixed-length families, written the DEAP way: module-level functions
that change individuals in place and return a tuple, never touching fitness."""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["cxUniformParts", "mutGaussianBounded"]


def cxUniformParts(ind1: list, ind2: list, indpb: float, genes_per_part: int = 1) -> tuple[list, list]:
    """Swap whole parts (runs of ``genes_per_part`` genes) between the two individuals, each with probability
    ``indpb`` (``random.random`` once per part). With one gene per part this is DEAP's uniform crossover."""
    for start in range(0, min(len(ind1), len(ind2)), genes_per_part):
        if random.random() < indpb:
            stop = start + genes_per_part
            ind1[start:stop], ind2[start:stop] = ind2[start:stop], ind1[start:stop]
    return ind1, ind2


def mutGaussianBounded(individual: list, low: Sequence[float], up: Sequence[float], indpb: float,
                       sigma: float = 0.1, choices: Sequence[int] = ()) -> tuple[list]:
    """Per gene, with probability ``indpb`` (``random.random``): a float gene takes a step of
    ``random.gauss(0, sigma * (up - low))`` clipped to ``[low, up]``; a gene listed in ``choices`` (an int in
    ``low..up``) moves to another value (``random.randrange``). Changes ``individual`` in place."""
    discrete = set(choices)
    for i in range(len(individual)):
        if random.random() >= indpb:
            continue
        if i in discrete:
            count = int(up[i] - low[i]) + 1
            if count > 1:
                other = random.randrange(count - 1)
                current = int(individual[i] - low[i])
                individual[i] = int(low[i]) + (other if other < current else other + 1)
            continue
        step = random.gauss(0.0, sigma * (up[i] - low[i]))
        individual[i] = min(up[i], max(low[i], individual[i] + step))
    return (individual,)
