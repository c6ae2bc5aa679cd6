"""The merge methods: one registered kernel each, with mergekit's parameter meanings.

A kernel receives the :class:`MergeInputs` of one parameter tensor (each source's, the base model's, and
what derives from them: task vectors and the magnitude buckets of their entries, computed once per process),
the part's parameters and, for random methods, a seeded generator. It accumulates in float32 and returns a
float32 tensor (the engine's own tensor when it offers one as ``inputs.out``, which saves a copy); the
engine writes it in the skeleton's dtype.

Per source, ``weight`` scales a source (``linear``) or its task vector (source - base); ``density`` is the
share of a task vector's entries that survive sparsification; ``gamma`` (breadcrumbs) the share of the
largest entries removed as outliers; ``epsilon`` (della) the spread of keep probabilities around
``density``. Per part, ``t`` is the slerp position from the first source (0) to the second (1). Options
fixed for a whole run: ``normalize`` (divide by the sum of weights), ``rescale`` (restore the L1 norm of a
sparsified task vector) and ``lambda`` (scale of the merged task vector), with mergekit's defaults.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, InvalidGenomeError
from .inputs import DerivedCache, MergeInputs

__all__ = ["MergeMethod", "MERGE_METHODS", "register_merge_method", "get_method", "check_method_options",
           "MergeInputs", "DerivedCache"]

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


MERGE_METHODS: dict[str, MergeMethod] = {}


def register_merge_method(name: str, **spec) -> Callable[[Kernel], Kernel]:
    """Register ``kernel(inputs, *, generator, **params)`` as the merge method ``name`` (see
    :class:`MergeMethod` for ``spec``)."""

    def register(kernel: Kernel) -> Kernel:
        MERGE_METHODS[name] = MergeMethod(name, kernel, **spec)
        return kernel

    return register


def _hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def check_method_options(options: Mapping[str, Mapping[str, object]], where: str = "method_options") -> None:
    """Raise ConfigError naming the first unknown method, unknown option or value of the wrong type in
    ``options`` (``{method: {option: value}}``, found at ``where``): switches such as ``normalize`` take true or
    false, ``lambda`` a finite number. Messages read ``KEY: problem``."""
    methods = [name for name in MERGE_METHODS if name != "take"]
    for name, values in options.items():
        if name not in methods:
            raise ConfigError(f"{where}: unknown merge method {name!r}{_hint(str(name), methods)}")
        known = MERGE_METHODS[name].options
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}.{name}: expected a mapping of options ({', '.join(known) or 'none'}), "
                              f"got {values!r}")
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}.{name}: no option {key!r}"
                                  f"{_hint(str(key), list(known)) if known else ' (it has none)'}")
            switch = isinstance(known[key], bool)
            fits = isinstance(value, bool) if switch else \
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not fits:
                raise ConfigError(f"{where}.{name}.{key}: expected {'true or false' if switch else 'a number'}, "
                                  f"got {value!r}")


def get_method(name: str) -> MergeMethod:
    if name not in MERGE_METHODS:
        raise InvalidGenomeError(f"unknown merge method {name!r}; known: {', '.join(MERGE_METHODS)}")
    return MERGE_METHODS[name]


from . import interpolation, model_stock, task_vectors  # noqa: E402,F401  (each registers its methods)
