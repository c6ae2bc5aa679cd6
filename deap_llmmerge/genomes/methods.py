"""``methods``: per part (or group of parts), the parameters of a merge method as bounded float genes.

Genes of one group, in order: the method's index (only with ``method: search``), the per-part genes
(``t``), then for every source its per-source genes (``weight``, ``density``, ``gamma``, ``epsilon``).
Bounds: weight [0, 1] ([-0.5, 1.5] with negative weights), density [0.1, 1], t [0, 1], gamma [0, 0.2],
epsilon [0, 0.3]. Task-vector methods merge the sources other than the base model; a base that is one of
the sources keeps its genes, unused.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from deap import base

from ..errors import ConfigError, InvalidGenomeError
from ..methods import MERGE_METHODS, MergeMethod
from ..models.plans import MergePlan, PartMerge
from .family import GenomeFamily
from .operators import cxUniformParts, mutGaussianBounded
from .space import GenomeSpace

__all__ = ["initMethods", "pureMethods", "seedMethods", "decodeMethods", "genome_bounds", "default_search_methods",
           "SEARCHABLE"]

BOUNDS = {"weight": (0.0, 1.0), "density": (0.1, 1.0), "t": (0.0, 1.0), "gamma": (0.0, 0.2), "epsilon": (0.0, 0.3),
          "select_topk": (0.1, 1.0)}
NEGATIVE_WEIGHT = (-0.5, 1.5)
NO_PURE_SOURCES = ("sce", "nearswap")  # searched beside linear, which holds the pure sources
SEARCHABLE = ("linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "della",
              "model_stock")


def _methods(space: GenomeSpace) -> list[MergeMethod]:
    names = space.search_methods if space.method == "search" else (space.method,)
    return [MERGE_METHODS[name] for name in names]


def _union(space: GenomeSpace, attribute: str) -> list[str]:
    names: list[str] = []
    for method in _methods(space):
        names += [name for name in getattr(method, attribute) if name not in names]
    return names


def _group_layout(space: GenomeSpace) -> list[tuple[str, int | None]]:
    """(gene name, source or None) for the genes of one group."""
    layout: list[tuple[str, int | None]] = [("method", None)] if space.method == "search" else []
    layout += [(name, None) for name in _union(space, "per_part")]
    layout += [(name, k) for k in range(space.n_sources) for name in _union(space, "per_source")]
    return layout


def genome_bounds(space: GenomeSpace) -> tuple[list[float], list[float], list[int]]:
    """Lower and upper bound of every gene, and the positions of the method genes."""
    low, up, choices = [], [], []
    for _ in space.groups():
        for name, _source in _group_layout(space):
            if name == "method":
                choices.append(len(low))
                bounds = (0, len(space.search_methods) - 1)
            elif name == "weight" and space.negative_weights:
                bounds = NEGATIVE_WEIGHT
            else:
                bounds = BOUNDS[name]
            low.append(bounds[0])
            up.append(bounds[1])
    return low, up, choices


def _participants(method: MergeMethod, space: GenomeSpace) -> tuple[int, ...]:
    if method.needs_base and space.base_index < space.n_sources:
        return tuple(k for k in range(space.n_sources) if k != space.base_index)
    return tuple(range(space.n_sources))


def _group_genes(space: GenomeSpace, method: MergeMethod, per_source: Callable[[str, int], float],
                 per_part: Callable[[str], float]) -> list:
    genes = []
    for name, source in _group_layout(space):
        if name == "method":
            genes.append(space.search_methods.index(method.name))
        elif source is None:
            genes.append(per_part(name))
        else:
            genes.append(per_source(name, source))
    return genes


DEFAULTS = {"weight": 1.0, "density": 1.0, "t": 0.5, "gamma": 0.01, "epsilon": 0.15, "select_topk": 1.0}


def _default(method: MergeMethod, name: str) -> float:
    """mergekit's default of a parameter (``weight``, which mergekit requires, defaults to 1)."""
    return method.defaults.get(name, DEFAULTS[name])


def default_search_methods(n_sources: int, base_index: int) -> tuple[str, ...]:
    """The searchable methods that can merge these sources (slerp: exactly two; model stock: two besides
    the base)."""
    space = GenomeSpace(("embed",), n_sources, base_index)
    fits = []
    for name in SEARCHABLE:
        method = MERGE_METHODS[name]
        count = len(_participants(method, space))
        if count >= method.min_sources and (method.max_sources is None or count <= method.max_sources):
            fits.append(name)
    return tuple(fits)


def initMethods(container: Callable, space: GenomeSpace) -> list:
    """Every gene uniform within its bounds (``random.uniform``; ``random.randrange`` for method genes)."""
    low, up, choices = genome_bounds(space)
    discrete = set(choices)
    return container(random.randrange(int(up[i]) + 1) if i in discrete else random.uniform(low[i], up[i])
                     for i in range(len(low)))


def _pure_method(space: GenomeSpace) -> MergeMethod:
    if space.method == "search":
        return MERGE_METHODS["linear"]
    return MERGE_METHODS[space.method]


def pureMethods(container: Callable, source: int, space: GenomeSpace) -> list:
    """The genome that decodes to ``take source`` in every part (weight 1 on it, density 1)."""
    method = _pure_method(space)
    participants = _participants(method, space)

    def per_source(name: str, k: int) -> float:
        if name == "weight":
            return 1.0 if k == source and k in participants else 0.0
        return 1.0 if name == "density" else _default(method, name)

    def per_part(name: str) -> float:  # slerp's t: 0 is the first source, 1 the second
        return (0.0 if source == 0 else 1.0) if name == "t" else _default(method, name)

    return container(gene for _ in space.groups() for gene in _group_genes(space, method, per_source, per_part))


def seedMethods(container: Callable, space: GenomeSpace) -> list:
    """mergekit's default recipe of every method searched (weight 1, mergekit's other defaults)."""
    seeds = []
    for method in _methods(space):
        genes = _group_genes(space, method, lambda name, k, m=method: _default(m, name),
                             lambda name, m=method: _default(m, name))
        seeds.append(container(gene for _ in space.groups() for gene in genes))
    return seeds


def _take(method: MergeMethod, participants: Sequence[int], values: dict, options: dict,
          base_index: int) -> int | None:
    """The source this part's merge reproduces exactly, or None."""
    if method.name == "slerp":
        t = values["t"]
        return participants[0] if t == 0 else participants[1] if t == 1 else None
    if not method.takes_one_source:
        return None
    if method.name == "nearswap":  # t = 0 keeps the base
        return base_index if values["t"] == 0 else None
    weights = values["weight"]
    if method.name in ("nuslerp", "multislerp"):  # one nonzero weight: that source (normalised weights)
        used = [i for i, w in enumerate(weights) if w != 0]
        scaled = options.get("normalize_weights", True) or method.name == "nuslerp"
        return participants[used[0]] if len(used) == 1 and (scaled or weights[used[0]] == 1) else None
    used = [i for i, w in enumerate(weights) if w != 0]
    if method.needs_base and not used:
        return base_index
    if len(used) != 1 or options.get("lambda", 1.0) != 1.0:
        return None
    i = used[0]
    if values.get("density", [1.0] * len(weights))[i] < 1:
        return None
    return participants[i] if options.get("normalize") or weights[i] == 1 else None


def decodeMethods(genome: Sequence, space: GenomeSpace) -> MergePlan:
    groups, layout = space.groups(), _group_layout(space)
    if len(genome) != len(groups) * len(layout):
        raise InvalidGenomeError(f"methods genome has {len(genome)} genes, expected {len(groups)} groups x "
                                 f"{len(layout)} genes")
    low, up, _ = genome_bounds(space)
    for i, gene in enumerate(genome):
        if not low[i] <= gene <= up[i]:
            raise InvalidGenomeError(f"methods gene {i} is {gene!r}, outside [{low[i]}, {up[i]}]")
    steps = {}
    for g, group in enumerate(groups):
        genes = dict(enumerate(genome[g * len(layout):(g + 1) * len(layout)]))
        method = MERGE_METHODS[space.search_methods[int(genes[0])]] if space.method == "search" else \
            MERGE_METHODS[space.method]
        participants = _participants(method, space)
        per_source = {name: [float(genes[j]) for j, (n, k) in enumerate(layout) if n == name and k in participants]
                      for name in method.per_source}
        per_part = {name: float(genes[j]) for j, (name, k) in enumerate(layout) if name in method.per_part}
        options = {**method.options, **space.options(method.name)}
        taken = _take(method, participants, {**per_source, **per_part}, options, space.base_index)
        params = tuple((name, tuple(per_source[name])) for name in method.per_source)
        params += tuple((name, (per_part[name],)) for name in method.per_part)
        if method.random:
            params += (("seed", (float(space.seed),)),)
        for index in group:
            part = space.part_names[index]
            if taken is not None:
                steps[index] = (part, PartMerge("take", (taken,), part))
            else:
                steps[index] = (part, PartMerge(method.name, participants, part, params,
                                                space.base_index if method.needs_base else None))
    return MergePlan(tuple(steps[i] for i in range(len(space.part_names))))


def check(space: GenomeSpace) -> None:
    if space.method is None:
        raise ConfigError("genome 'methods' needs a method (one of the registered methods, or search)")
    names = space.search_methods if space.method == "search" else (space.method,)
    if space.method == "search" and "linear" not in names:
        raise ConfigError("method: search needs linear among the searched methods (it holds the pure sources)")
    for name in names:
        method = MERGE_METHODS.get(name)
        if method is None or name == "take":
            known = ", ".join(m for m in MERGE_METHODS if m != "take")
            raise ConfigError(f"unknown merge method {name!r}; known: {known}, search")
        count = len(_participants(method, space))
        if count < method.min_sources or (method.max_sources is not None and count > method.max_sources):
            raise ConfigError(f"method {name} cannot merge {count} source(s) (with base model "
                              f"{space.base_index}); it takes {method.min_sources}-{method.max_sources or 'any'}")
        if space.method != "search" and not method.per_source and not method.per_part:
            raise ConfigError(f"method {name} has no parameters to search; use method: search")
        if space.method != "search" and name in NO_PURE_SOURCES:
            raise ConfigError(f"method {name} cannot give back each source (the pure genomes a search starts "
                              f"from); use method: search with search_methods: [linear, {name}]")


def register_operators(toolbox: base.Toolbox, space: GenomeSpace, indpb: float, swap_rate: float = 0.5) -> None:
    low, up, choices = genome_bounds(space)
    toolbox.register("mate", cxUniformParts, indpb=swap_rate, genes_per_part=len(_group_layout(space)))
    toolbox.register("mutate", mutGaussianBounded, low=low, up=up, indpb=indpb, sigma=0.1, choices=choices)


FAMILY = GenomeFamily(
    "methods", "per part, a merge method's parameters (weight, density, t, ...) as bounded genes",
    initMethods, pureMethods, decodeMethods, register_operators, seedMethods, check, genome_bounds,
)
