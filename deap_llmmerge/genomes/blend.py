"""``blend``: per part (or group of parts), one weight per source; a linear merge per part."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from deap import base

from ..errors import InvalidGenomeError
from ..models.plans import MergePlan, PartMerge
from .family import GenomeFamily
from .operators import cxUniformParts
from .space import GenomeSpace

__all__ = ["initBlend", "pureBlend", "decodeBlend", "mutBlend"]


def _normalise(weights: list[float]) -> list[float]:
    total = sum(weights)
    if total <= 0:
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


def initBlend(container: Callable, space: GenomeSpace) -> list:
    """Per group, ``n_sources`` weights from ``random.random``, normalised to sum 1."""
    genes: list[float] = []
    for _ in space.groups():
        genes += _normalise([random.random() for _ in range(space.n_sources)])
    return container(genes)


def pureBlend(container: Callable, source: int, space: GenomeSpace) -> list:
    """Weight 1 on ``source`` and 0 on the others, for every part."""
    return container([1.0 if k == source else 0.0 for _ in space.groups() for k in range(space.n_sources)])


def decodeBlend(genome: Sequence, space: GenomeSpace) -> MergePlan:
    groups, n = space.groups(), space.n_sources
    if len(genome) != len(groups) * n:
        raise InvalidGenomeError(f"blend genome has {len(genome)} genes, expected {len(groups)} parts x {n} sources")
    steps = {}
    for g, group in enumerate(groups):
        weights = [float(w) for w in genome[g * n:(g + 1) * n]]
        part = space.part_names[group[0]]
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise InvalidGenomeError(f"blend weights for {part} are {weights}: need finite, >= 0, not all 0")
        weights = [w / sum(weights) for w in weights]
        used = [k for k, w in enumerate(weights) if w > 0]
        for index in group:
            name = space.part_names[index]
            if len(used) == 1:
                steps[index] = (name, PartMerge("take", (used[0],), name))
            else:
                params = (("weight", tuple(weights[k] for k in used)),)
                steps[index] = (name, PartMerge("linear", tuple(used), name, params))
    return MergePlan(tuple(steps[i] for i in range(len(space.part_names))))


def mutBlend(individual: list, n_sources: int, indpb: float, sigma: float = 0.2) -> tuple[list]:
    """With probability ``indpb`` per gene (``random.random``), add ``random.gauss(0, sigma)`` and clip to
    [0, 1]; each part with a changed gene is renormalised to sum 1, the other parts are left bit for bit.
    Changes ``individual`` in place."""
    for start in range(0, len(individual), n_sources):
        changed = False
        for i in range(start, start + n_sources):
            if random.random() < indpb:
                individual[i] = min(1.0, max(0.0, individual[i] + random.gauss(0.0, sigma)))
                changed = True
        if changed:
            individual[start:start + n_sources] = _normalise(individual[start:start + n_sources])
    return (individual,)


def boundsBlend(space: GenomeSpace) -> tuple[list[float], list[float], list[int]]:
    """Every weight in [0, 1]; no integer genes."""
    count = len(space.groups()) * space.n_sources
    return [0.0] * count, [1.0] * count, []


def register_operators(toolbox: base.Toolbox, space: GenomeSpace, indpb: float, swap_rate: float = 0.5) -> None:
    toolbox.register("mate", cxUniformParts, indpb=swap_rate, genes_per_part=space.n_sources)
    toolbox.register("mutate", mutBlend, n_sources=space.n_sources, indpb=indpb)


FAMILY = GenomeFamily(
    "blend", "per part, one weight per source: a linear merge per part",
    initBlend, pureBlend, decodeBlend, register_operators, bounds=boundsBlend,
)
