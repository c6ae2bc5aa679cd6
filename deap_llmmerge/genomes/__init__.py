"""Genome families: how a flat list of numbers (a DEAP individual) describes a merge.

A family (:class:`GenomeFamily`) is one module's ``FAMILY``, listed in :data:`GENOMES` below, with
module-level functions:

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

from ..errors import ConfigError
from . import blend, choice, methods, stack
from .family import GenomeFamily
from .space import GenomeSpace

__all__ = ["GenomeFamily", "GenomeSpace", "GENOMES", "get_family", "register_genome_family"]

GENOMES: dict[str, GenomeFamily] = {family.name: family for family in (choice.FAMILY, blend.FAMILY, methods.FAMILY,
                                                                        stack.FAMILY)}


def register_genome_family(family: GenomeFamily) -> GenomeFamily:
    """Add your own family to the registry (the contract tests then cover it)."""
    GENOMES[family.name] = family
    return family


def get_family(name: str) -> GenomeFamily:
    if name not in GENOMES:
        raise ConfigError(f"unknown genome family {name!r}; known: {', '.join(GENOMES)}")
    return GENOMES[name]
