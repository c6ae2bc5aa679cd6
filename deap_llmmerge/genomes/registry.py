"""The genome families, by name: one module's ``FAMILY`` each, and yours once registered."""

from __future__ import annotations

from ..errors import ConfigError
from . import blend, choice, methods, stack
from .family import GenomeFamily

__all__ = ["GENOMES", "get_family", "register_genome_family"]

GENOMES: dict[str, GenomeFamily] = {family.name: family for family in (choice.FAMILY, blend.FAMILY, methods.FAMILY,
                                                                        stack.FAMILY)}


def register_genome_family(family: GenomeFamily) -> GenomeFamily:
    """Add your own family (the contract tests of ``tests/genomes`` then run over it)."""
    GENOMES[family.name] = family
    return family


def get_family(name: str) -> GenomeFamily:
    if name not in GENOMES:
        raise ConfigError(f"unknown genome family {name!r}; known: {', '.join(GENOMES)}")
    return GENOMES[name]
