"""What a merge method is: a kernel and what it needs (genes per source and per part, a base model,
defaults, run-wide options)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InvalidGenomeError
from .inputs import MergeInputs

__all__ = ["MergeMethod", "Kernel"]

Kernel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A kernel and what it needs: genes per source and per part, a base model, defaults and options."""

    name: str
    kernel: Kernel
    per_source: tuple[str, ...] = ()
    per_part: tuple[str, ...] = ()
    needs_base: bool = False
    random: bool = False
    min_sources: int = 1
    max_sources: int | None = None
    defaults: dict[str, float] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)
    takes_one_source: bool = True  # some parameters give back one source exactly (model_stock, karcher, sce: none)

    def check(self, part: str, step) -> None:
        """Raise InvalidGenomeError when ``step`` does not fit this method."""
        count = len(step.sources)
        if count < self.min_sources or (self.max_sources is not None and count > self.max_sources):
            raise InvalidGenomeError(f"part {part}: {self.name} cannot merge {count} source(s)")
        if self.needs_base and step.base is None:
            raise InvalidGenomeError(f"part {part}: {self.name} needs a base model")
        params = step.kwargs
        for name in self.per_source:
            if len(params.get(name, ())) != count:
                raise InvalidGenomeError(f"part {part}: {self.name} needs one {name} per source")
        for name in self.per_part:
            if len(params.get(name, ())) != 1:
                raise InvalidGenomeError(f"part {part}: {self.name} needs one {name}")
        for name, values in params.items():
            if not all(math.isfinite(v) for v in values):
                raise InvalidGenomeError(f"part {part}: {name} {list(values)} is not finite")
        for name in ("density", "t"):
            if any(not 0.0 <= v <= 1.0 for v in params.get(name, ())):
                raise InvalidGenomeError(f"part {part}: {name} {list(params[name])} outside [0, 1]")

    def merge_inputs(self, inputs: MergeInputs, params: dict, generator: torch.Generator | None = None,
                     options: dict | None = None) -> torch.Tensor:
        """The merged tensor from ``inputs`` with the step's ``params`` (and run-wide ``options``)."""
        settings = {**self.options, **(options or {})}
        values = {key: (value if key in self.per_source else value[0]) for key, value in params.items()
                  if key != "seed"}
        return self.kernel(inputs, generator=generator, **values, **settings)

    def merge(self, tensors: Sequence[torch.Tensor], base: torch.Tensor | None, params: dict,
              generator: torch.Generator | None = None, options: dict | None = None) -> torch.Tensor:
        """:meth:`merge_inputs` on plain tensors (nothing cached)."""
        return self.merge_inputs(MergeInputs(tensors, base), params, generator, options)
