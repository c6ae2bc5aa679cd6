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

from .family import GenomeFamily
from .registry import GENOMES, get_family, register_genome_family
from .settings import GenomeSettings
from .space import GenomeSpace

__all__ = ["GenomeFamily", "GenomeSpace", "GenomeSettings", "GENOMES", "get_family", "register_genome_family"]
