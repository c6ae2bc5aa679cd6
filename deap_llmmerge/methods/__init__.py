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

from ..errors import ConfigError, InvalidGenomeError
from . import interpolation, model_stock, task_vectors
from .base import Kernel, MergeMethod
from .inputs import DerivedCache, MergeInputs

__all__ = ["MergeMethod", "MERGE_METHODS", "register_merge_method", "get_method", "check_method_options",
           "MergeInputs", "DerivedCache"]

MERGE_METHODS: dict[str, MergeMethod] = {method.name: method for method in (
    *interpolation.METHODS, *task_vectors.METHODS, *model_stock.METHODS)}


def register_merge_method(name: str, **spec) -> Callable[[Kernel], Kernel]:
    """A decorator for your own method: register ``kernel(inputs, *, generator, **params)`` as the merge
    method ``name`` (see :class:`MergeMethod` for ``spec``); the registry's contract tests then cover it."""

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

