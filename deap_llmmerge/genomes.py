"""Genome families: how a flat list of numbers (a DEAP individual) describes a merge.

Each family registers four module-level functions in :data:`GENOMES`:

- ``init(container, n_parts, n_sources)``: a random genome;
- ``pure(container, source, n_parts, n_sources)``: the genome that reproduces one source exactly;
- ``decode(genome, part_names, n_sources) -> MergePlan``: pure, raises InvalidGenomeError;
- ``mutate(individual, n_sources, indpb)``: in place, returns ``(individual,)``.

``genes_per_part`` tells crossover how many consecutive genes describe one part.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ConfigError, InvalidGenomeError
from .merge import MergePlan, PartMerge

__all__ = [
    "GenomeFamily",
    "GENOMES",
    "get_family",
    "initChoice",
    "pureChoice",
    "decodeChoice",
    "mutChoice",
    "initBlend",
    "pureBlend",
    "decodeBlend",
    "mutBlend",
    "cxUniformParts",
]


@dataclass(frozen=True)
class GenomeFamily:
    name: str
    init: Callable
    pure: Callable
    decode: Callable[[Sequence, Sequence[str], int], MergePlan]
    mutate: Callable
    genes_per_part: Callable[[int], int]
    description: str


# --- choice: one int per part, the source that part comes from -------------------------------------

def initChoice(container: Callable, n_parts: int, n_sources: int) -> list:
    """Each part from a source drawn uniformly (``random.randrange`` once per part)."""
    return container(random.randrange(n_sources) for _ in range(n_parts))


def pureChoice(container: Callable, source: int, n_parts: int, n_sources: int) -> list:
    """Every part from ``source``."""
    return container([source] * n_parts)


def decodeChoice(genome: Sequence, part_names: Sequence[str], n_sources: int) -> MergePlan:
    if len(genome) != len(part_names):
        raise InvalidGenomeError(f"choice genome has {len(genome)} genes, the model has {len(part_names)} parts")
    steps = []
    for part, gene in zip(part_names, genome):
        if isinstance(gene, bool) or int(gene) != gene or not 0 <= gene < n_sources:
            raise InvalidGenomeError(f"choice gene for {part} is {gene!r}, expected an int in 0..{n_sources - 1}")
        steps.append((part, PartMerge("take", (int(gene),), part)))
    return MergePlan(tuple(steps))


def mutChoice(individual: list, n_sources: int, indpb: float) -> tuple[list]:
    """With probability ``indpb`` per gene (``random.random``), move that part to another source
    (``random.randrange`` among the others). Changes ``individual`` in place."""
    for i, gene in enumerate(individual):
        if random.random() < indpb:
            other = random.randrange(n_sources - 1)
            individual[i] = other if other < gene else other + 1
    return (individual,)


# --- blend: per part, one weight per source; a linear merge per part --------------------------------

def _normalise(weights: list[float]) -> list[float]:
    total = sum(weights)
    if total <= 0:
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


def initBlend(container: Callable, n_parts: int, n_sources: int) -> list:
    """Per part, ``n_sources`` weights from ``random.random``, normalised to sum 1."""
    genes: list[float] = []
    for _ in range(n_parts):
        genes += _normalise([random.random() for _ in range(n_sources)])
    return container(genes)


def pureBlend(container: Callable, source: int, n_parts: int, n_sources: int) -> list:
    """Weight 1 on ``source`` and 0 on the others, for every part."""
    return container([1.0 if k == source else 0.0 for _ in range(n_parts) for k in range(n_sources)])


def decodeBlend(genome: Sequence, part_names: Sequence[str], n_sources: int) -> MergePlan:
    if len(genome) != len(part_names) * n_sources:
        raise InvalidGenomeError(
            f"blend genome has {len(genome)} genes, expected {len(part_names)} parts x {n_sources} sources"
        )
    steps = []
    for p, part in enumerate(part_names):
        weights = [float(w) for w in genome[p * n_sources:(p + 1) * n_sources]]
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise InvalidGenomeError(f"blend weights for {part} are {weights}: need finite, >= 0, not all 0")
        weights = [w / sum(weights) for w in weights]
        used = [k for k, w in enumerate(weights) if w > 0]
        if len(used) == 1:
            steps.append((part, PartMerge("take", (used[0],), part)))
        else:
            params = (("weights", tuple(weights[k] for k in used)),)
            steps.append((part, PartMerge("linear", tuple(used), part, params)))
    return MergePlan(tuple(steps))


def mutBlend(individual: list, n_sources: int, indpb: float, sigma: float = 0.2) -> tuple[list]:
    """With probability ``indpb`` per gene (``random.random``), add ``random.gauss(0, sigma)``, clip to
    [0, 1]; then renormalise each part's weights to sum 1. Changes ``individual`` in place."""
    for i in range(len(individual)):
        if random.random() < indpb:
            individual[i] = min(1.0, max(0.0, individual[i] + random.gauss(0.0, sigma)))
    for start in range(0, len(individual), n_sources):
        individual[start:start + n_sources] = _normalise(individual[start:start + n_sources])
    return (individual,)


# --- crossover shared by the families -----------------------------------------------------------------

def cxUniformParts(ind1: list, ind2: list, indpb: float, genes_per_part: int = 1) -> tuple[list, list]:
    """Swap whole parts between the two individuals, each with probability ``indpb`` (``random.random``
    once per part). With one gene per part this is DEAP's uniform crossover. Changes both in place."""
    for start in range(0, min(len(ind1), len(ind2)), genes_per_part):
        if random.random() < indpb:
            stop = start + genes_per_part
            ind1[start:stop], ind2[start:stop] = ind2[start:stop], ind1[start:stop]
    return ind1, ind2


def _one_gene(n_sources: int) -> int:
    return 1


def _one_gene_per_source(n_sources: int) -> int:
    return n_sources


GENOMES: dict[str, GenomeFamily] = {
    "choice": GenomeFamily("choice", initChoice, pureChoice, decodeChoice, mutChoice, _one_gene,
                           "one int per part: the source that part comes from"),
    "blend": GenomeFamily("blend", initBlend, pureBlend, decodeBlend, mutBlend, _one_gene_per_source,
                          "per part, one weight per source: a linear merge per part"),
}


def get_family(name: str) -> GenomeFamily:
    if name not in GENOMES:
        raise ConfigError(f"unknown genome family {name!r}; known: {', '.join(GENOMES)}")
    return GENOMES[name]
