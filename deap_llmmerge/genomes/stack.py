"""``stack``: a variable-depth list of (source, layer) picks, one per output layer (data-flow search).

Genes: ``[embed source, head source, pick_0, pick_1, ...]`` with ``pick = source * L + layer`` for sources
of L layers. The merged model has one layer per pick, in order, so depth can grow (duplicated layers, as
in depth up-scaling) or shrink (deleted layers) within the ``depth`` bounds of the space.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from deap import base

from ..errors import ConfigError, InvalidGenomeError
from ..models.parts import layer_part
from ..models.plans import MergePlan, PartMerge
from .family import GenomeFamily
from .space import GenomeSpace

__all__ = ["initStack", "pureStack", "decodeStack", "cxStackOnePoint", "mutStack", "default_depth"]

FIXED = 2  # the embed and head genes before the picks


def default_depth(num_layers: int) -> tuple[int, int]:
    """The sources' depth to 1.5 times it."""
    return num_layers, max(num_layers, (3 * num_layers) // 2)


def _bounds(space: GenomeSpace) -> tuple[int, int]:
    return space.depth or default_depth(space.num_layers)


def initStack(container: Callable, space: GenomeSpace) -> list:
    """A depth drawn from the bounds (``random.randint``); output layer i takes the source layer at the same
    relative depth (so layers stay in order, some repeated or skipped) from a random source
    (``random.randrange`` per layer, and for embed and head)."""
    low, high = _bounds(space)
    depth, layers = random.randint(low, high), space.num_layers
    picks = [random.randrange(space.n_sources) * layers + (round(i * (layers - 1) / (depth - 1)) if depth > 1 else 0)
             for i in range(depth)]
    return container([random.randrange(space.n_sources), random.randrange(space.n_sources), *picks])


def pureStack(container: Callable, source: int, space: GenomeSpace) -> list:
    """Every layer of ``source`` in order, its embeddings and head: exactly that source."""
    layers = space.num_layers
    return container([source, source, *(source * layers + j for j in range(layers))])


def decodeStack(genome: Sequence, space: GenomeSpace) -> MergePlan:
    layers, n = space.num_layers, space.n_sources
    if len(genome) < FIXED + 1:
        raise InvalidGenomeError(f"stack genome has {len(genome)} genes: needs embed, head and at least one layer")
    for i, gene in enumerate(genome):
        limit = n if i < FIXED else n * layers
        if isinstance(gene, bool) or int(gene) != gene or not 0 <= gene < limit:
            raise InvalidGenomeError(f"stack gene {i} is {gene!r}, expected an int in 0..{limit - 1}")
    embed, head, picks = int(genome[0]), int(genome[1]), [int(g) for g in genome[FIXED:]]
    steps = [("embed", PartMerge("take", (embed,), "embed"))]
    steps += [(layer_part(i), PartMerge("take", (pick // layers,), layer_part(pick % layers)))
              for i, pick in enumerate(picks)]
    if "head" in space.part_names:
        steps.append(("head", PartMerge("take", (head,), "head")))
    return MergePlan(tuple(steps))


def cxStackOnePoint(ind1: list, ind2: list, min_depth: int, max_depth: int) -> tuple[list, list]:
    """Swap the embed and head genes (``random.random`` each), then cut each parent's layers at one point
    (``random.randint``) and swap the tails; the cut in the second parent is drawn among those that keep
    both children within ``[min_depth, max_depth]``. Changes both in place."""
    for i in range(FIXED):
        if random.random() < 0.5:
            ind1[i], ind2[i] = ind2[i], ind1[i]
    len1, len2 = len(ind1) - FIXED, len(ind2) - FIXED
    i = random.randint(0, len1)
    low = max(0, i + len2 - max_depth, min_depth - len1 + i)
    high = min(len2, i + len2 - min_depth, max_depth - len1 + i)
    if low > high:  # parents outside the bounds: keep the layers as they are
        return ind1, ind2
    j = random.randint(low, high)
    tail1, tail2 = ind1[FIXED + i:], ind2[FIXED + j:]
    ind1[FIXED + i:], ind2[FIXED + j:] = tail2, tail1
    return ind1, ind2


def mutStack(individual: list, n_sources: int, num_layers: int, min_depth: int, max_depth: int,
             pick_rate: float, duplicate_rate: float, delete_rate: float, swap_rate: float) -> tuple[list]:
    """Per output layer, each with its own probability (``random.random``): change the pick (another
    source, or the neighbouring source layer), duplicate the layer, delete it, swap it with the next one.
    The embed and head genes move to another source with ``pick_rate``. Depth stays within bounds.
    Changes ``individual`` in place."""
    for i in range(FIXED):
        if n_sources > 1 and random.random() < pick_rate:
            other = random.randrange(n_sources - 1)
            individual[i] = other if other < individual[i] else other + 1
    picks = list(individual[FIXED:])
    out: list[int] = []
    for position, pick in enumerate(picks):
        remaining = len(picks) - position - 1
        if random.random() < pick_rate:
            source, layer = divmod(pick, num_layers)
            if n_sources > 1 and random.random() < 0.5:
                other = random.randrange(n_sources - 1)
                source = other if other < source else other + 1
            else:
                layer = min(num_layers - 1, max(0, layer + random.choice((-1, 1))))
            pick = source * num_layers + layer
        if random.random() < delete_rate and len(out) + remaining >= min_depth:
            continue
        out.append(pick)
        if random.random() < duplicate_rate and len(out) + remaining < max_depth:
            out.append(pick)
    for i in range(len(out) - 1):
        if random.random() < swap_rate:
            out[i], out[i + 1] = out[i + 1], out[i]
    individual[FIXED:] = out
    return (individual,)


def check(space: GenomeSpace) -> None:
    low, high = _bounds(space)
    if not 1 <= low <= high:
        raise ConfigError(f"depth bounds must satisfy 1 <= min <= max, got min {low}, max {high}")
    if space.granularity != "layer":
        raise ConfigError("genome_granularity applies to choice, blend and methods genomes, not stack")


def register_operators(toolbox: base.Toolbox, space: GenomeSpace, indpb: float, swap_rate: float = 0.5) -> None:
    low, high = _bounds(space)
    toolbox.register("mate", cxStackOnePoint, min_depth=low, max_depth=high)
    toolbox.register("mutate", mutStack, n_sources=space.n_sources, num_layers=space.num_layers, min_depth=low,
                     max_depth=high, pick_rate=indpb, duplicate_rate=indpb / 2, delete_rate=indpb / 2,
                     swap_rate=indpb / 2)


FAMILY = GenomeFamily(
    "stack", "a variable-length list of (source, layer) picks, one per output layer",
    initStack, pureStack, decodeStack, register_operators, check=check,
)
