"""Merge plans, the registry of merge methods, and the engine that writes a plan into a model in place.

A :class:`MergePlan` is pure data: for every output part, a :class:`PartMerge` says which method builds
it from which sources' parts and with which parameters. Genomes decode into plans; everything that
touches tensors reads the plan, so new genome families and new merge methods meet only here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InvalidGenomeError
from .sources import SourcePool

__all__ = [
    "PartMerge",
    "MergePlan",
    "MERGE_METHODS",
    "register_merge_method",
    "take",
    "linear",
    "MergeEngine",
]

MergeMethod = Callable[..., torch.Tensor]
MERGE_METHODS: dict[str, MergeMethod] = {}


def register_merge_method(name: str) -> Callable[[MergeMethod], MergeMethod]:
    """Register ``fn(tensors, **params) -> tensor`` as the merge method ``name``."""

    def register(fn: MergeMethod) -> MergeMethod:
        MERGE_METHODS[name] = fn
        return fn

    return register


@register_merge_method("take")
def take(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The one source's tensor, unchanged."""
    return tensors[0]


@register_merge_method("linear")
def linear(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted sum of the sources' tensors, accumulated in float32."""
    merged = tensors[0].float() * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:]):
        merged.add_(tensor.float(), alpha=weight)
    return merged


@dataclass(frozen=True)
class PartMerge:
    """How one output part is built: ``method`` applied to ``source_part`` of each of ``sources``."""

    method: str
    sources: tuple[int, ...]
    source_part: str
    params: tuple[tuple[str, tuple[float, ...]], ...] = ()

    @property
    def kwargs(self) -> dict[str, tuple[float, ...]]:
        return dict(self.params)


@dataclass(frozen=True)
class MergePlan:
    """Per output part (in network order), how it is merged."""

    parts: tuple[tuple[str, PartMerge], ...]

    def to_dict(self) -> dict[str, dict]:
        """JSON-ready form, as written to recipe.json."""
        return {
            part: {"method": step.method, "sources": list(step.sources), "source_part": step.source_part,
                   **{key: list(value) for key, value in step.params}}
            for part, step in self.parts
        }

    @classmethod
    def from_dict(cls, data: dict[str, dict]) -> MergePlan:
        steps = []
        for part, step in data.items():
            params = tuple(
                (key, tuple(value)) for key, value in step.items()
                if key not in ("method", "sources", "source_part")
            )
            steps.append((part, PartMerge(step["method"], tuple(step["sources"]), step["source_part"], params)))
        return cls(tuple(steps))

    def validate(self, pool: SourcePool) -> None:
        """Raise InvalidGenomeError when the plan cannot be built from ``pool``."""
        planned = [part for part, _ in self.parts]
        if planned != pool.part_names:
            raise InvalidGenomeError(f"plan parts {planned} differ from the model's parts {pool.part_names}")
        for part, step in self.parts:
            if step.method not in MERGE_METHODS:
                raise InvalidGenomeError(f"part {part}: unknown merge method {step.method!r}")
            if step.source_part not in pool.parts:
                raise InvalidGenomeError(f"part {part}: unknown source part {step.source_part!r}")
            bad = [k for k in step.sources if not 0 <= k < pool.num_sources]
            if not step.sources or bad:
                raise InvalidGenomeError(
                    f"part {part}: source indices {list(step.sources)} outside 0..{pool.num_sources - 1}"
                )


class MergeEngine:
    """Writes plans into one reusable model, in place.

    The engine remembers which step each part currently holds and rewrites only the parts whose step
    changed, so scoring a population whose genomes share parts copies little.
    """

    def __init__(self, pool: SourcePool, model: nn.Module) -> None:
        self.pool = pool
        self.model = model
        params = dict(model.named_parameters())
        self.targets = {part: [(inner, params[full]) for full, inner in names] for part, names in pool.parts.items()}
        self.loaded: dict[str, PartMerge] = {}

    @torch.no_grad()
    def apply(self, plan: MergePlan) -> nn.Module:
        """Make the model hold ``plan``'s weights and return it."""
        plan.validate(self.pool)
        for part, step in plan.parts:
            if self.loaded.get(part) == step:
                continue
            self.loaded.pop(part, None)
            method = MERGE_METHODS[step.method]
            for inner, target in self.targets[part]:
                tensors = [self.pool.tensor(k, step.source_part, inner) for k in step.sources]
                target.copy_(method(tensors, **step.kwargs))
            self.loaded[part] = step
        return self.model
