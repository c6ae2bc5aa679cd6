"""``choice``: one int per part (or group of parts): the source that part comes from."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from deap import base

from ..errors import InvalidGenomeError
from ..models.plans import MergePlan, PartMerge
from .family import GenomeFamily
from .operators import cxUniformParts
from .space import GenomeSpace

__all__ = ["initChoice", "pureChoice", "decodeChoice", "mutChoice"]


def initChoice(container: Callable, space: GenomeSpace) -> list:
    """Each group from a source drawn uniformly (``random.randrange`` once per group)."""
    return container(random.randrange(space.n_sources) for _ in space.groups())


def pureChoice(container: Callable, source: int, space: GenomeSpace) -> list:
    """Every part from ``source``."""
    return container([source] * len(space.groups()))


def decodeChoice(genome: Sequence, space: GenomeSpace) -> MergePlan:
    groups = space.groups()
    if len(genome) != len(groups):
        raise InvalidGenomeError(f"choice genome has {len(genome)} genes, the model has {len(groups)} parts")
    steps = {}
    for group, gene in zip(groups, genome):
        part = space.part_names[group[0]]
        if isinstance(gene, bool) or int(gene) != gene or not 0 <= gene < space.n_sources:
            raise InvalidGenomeError(f"choice gene for {part} is {gene!r}, expected an int in 0..{space.n_sources - 1}")
        for index in group:
            name = space.part_names[index]
            steps[index] = (name, PartMerge("take", (int(gene),), name))
    return MergePlan(tuple(steps[i] for i in range(len(space.part_names))))


def mutChoice(individual: list, n_sources: int, indpb: float) -> tuple[list]:
    """With probability ``indpb`` per gene (``random.random``), move that part to another source
    (``random.randrange`` among the others). Changes ``individual`` in place."""
    for i, gene in enumerate(individual):
        if random.random() < indpb:
            other = random.randrange(n_sources - 1)
            individual[i] = other if other < gene else other + 1
    return (individual,)


def register_operators(toolbox: base.Toolbox, space: GenomeSpace, indpb: float, swap_rate: float = 0.5) -> None:
    toolbox.register("mate", cxUniformParts, indpb=swap_rate, genes_per_part=1)
    toolbox.register("mutate", mutChoice, n_sources=space.n_sources, indpb=indpb)


FAMILY = GenomeFamily(
    "choice", "one int per part: the source that part comes from",
    initChoice, pureChoice, decodeChoice, register_operators,
)
