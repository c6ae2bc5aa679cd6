"""What a genome family is: the module-level functions that make, decode and vary its genomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..models.plans import MergePlan
from .space import GenomeSpace

__all__ = ["GenomeFamily"]


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
    bounds: Callable[[GenomeSpace], tuple[list, list, list]] | None = None  # floats families: low, up, int genes
