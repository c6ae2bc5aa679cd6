"""The merge methods, by name: each module's ``METHODS``, and yours once registered; the check of a run's
``method_options``."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence

from ..errors import ConfigError, InvalidGenomeError
from . import interpolation, model_stock, sce, spherical, task_vectors
from .base import Kernel, MergeMethod

__all__ = ["MERGE_METHODS", "register_merge_method", "get_method", "check_method_options"]

MERGE_METHODS: dict[str, MergeMethod] = {method.name: method for method in (
    *interpolation.METHODS, *task_vectors.METHODS, *model_stock.METHODS, *sce.METHODS, *spherical.METHODS)}


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

