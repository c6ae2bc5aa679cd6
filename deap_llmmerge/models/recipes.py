"""Fixed recipes: one method with the same parameters in every part (what a hand-written mergekit config
does), for baselines and one-off merges."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import ConfigError
from ..methods import MERGE_METHODS
from .engine import MergeEngine
from .plans import MergePlan, PartMerge
from .sources import SourcePool

__all__ = ["merge_models", "uniform_plan"]


def uniform_plan(pool: SourcePool, method: str, seed: int = 0, **params: float | Sequence[float]) -> MergePlan:
    """``method`` in every part over every source (the base model excluded for task-vector methods), with
    ``params`` (a value for all sources or one per source) and mergekit's defaults for the rest."""
    if method not in MERGE_METHODS or method == "take":
        known = ", ".join(m for m in MERGE_METHODS if m != "take")
        raise ConfigError(f"unknown merge method {method!r}; known: {known}")
    spec = MERGE_METHODS[method]
    sources = tuple(k for k in range(pool.num_sources) if not (spec.needs_base and k == pool.base_index))
    unknown = set(params) - set(spec.per_source) - set(spec.per_part)
    if unknown:
        raise ConfigError(f"{method} has no parameter {sorted(unknown)[0]!r}")
    values = []
    for name in spec.per_source:
        value = params.get(name, spec.defaults.get(name, 1.0))
        value = tuple(value) if isinstance(value, Sequence) else (float(value),) * len(sources)
        if len(value) != len(sources):
            raise ConfigError(f"{method}: {name} needs {len(sources)} values, got {len(value)}")
        values.append((name, value))
    values += [(name, (float(params.get(name, spec.defaults.get(name, 0.5))),)) for name in spec.per_part]
    if spec.random:
        values.append(("seed", (float(seed),)))
    base = pool.base_index if spec.needs_base else None
    return MergePlan(tuple((part, PartMerge(method, sources, part, tuple(values), base)) for part in pool.part_names))


def merge_models(sources: Sequence[object], method: str, base_model: object | None = None, seed: int = 0,
                 **params: float | Sequence[float]) -> nn.Module:
    """A new model: ``sources`` merged by ``method`` with ``params`` in every part (see :func:`uniform_plan`).

    ``merge_models([a, b], "ties", base_model=base, density=0.5)``: TIES at weight 1 (mergekit's usual
    value) and density 0.5.
    """
    pool = SourcePool(sources, base=base_model)
    return MergeEngine(pool, pool.new_skeleton()).apply(uniform_plan(pool, method, seed, **params))
