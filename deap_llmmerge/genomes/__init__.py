"""Genome families: how a flat list of numbers (a DEAP individual) describes a merge.

A family is registered in :data:`GENOMES` with module-level functions:

- ``init(container, space)``: a random genome;
- ``pure(container, source, space)``: the genome whose merge is exactly that source;
- ``seeds(container, space)``: extra genomes for the first generation (a method's default recipe);
- ``decode(genome, space) -> MergePlan``: pure, raises InvalidGenomeError;
- ``register_operators(toolbox, space, indpb)``: registers ``mate`` and ``mutate`` (DEAP style: in place,
  returning tuples);
- ``check(space)``: raises ConfigError when the family's settings do not fit the sources.

The :class:`GenomeSpace` holds what a genome is decoded against: the parts, the number of sources, the
base model, how parts share genes (``granularity``), and the family's own settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..plan import MergePlan
from .space import GenomeSpace

__all__ = ["GenomeFamily", "GenomeSpace", "GENOMES", "get_family", "register_genome_family"]


def no_seeds(container: Callable, space: GenomeSpace) -> list:
    """No genomes beyond the pure sources and random ones."""
    return []


def no_check(space: GenomeSpace) -> None:
    """Every space fits."""


@dataclass(frozen=True)
class GenomeFamily:
    name: str
    description: str
    init: Callable
    pure: Callable
    decode: Callable[[Sequence, GenomeSpace], MergePlan]
    register_operators: Callable
    seeds: Callable = no_seeds
    check: Callable[[GenomeSpace], None] = no_check


GENOMES: dict[str, GenomeFamily] = {}


def register_genome_family(family: GenomeFamily) -> GenomeFamily:
    GENOMES[family.name] = family
    return family


def get_family(name: str) -> GenomeFamily:
    if name not in GENOMES:
        raise ConfigError(f"unknown genome family {name!r}; known: {', '.join(GENOMES)}")
    return GENOMES[name]


from . import blend, choice, methods, stack  # noqa: E402,F401  (each registers its family)
