"""Merge plans: pure data saying, for every output part, which method builds it from which sources.

Genomes decode into plans; everything that touches tensors reads the plan. A plan's output parts are
``embed``, ``layers.0`` .. ``layers.D-1`` and ``head``; D may differ from the sources' depth (stacking),
and each output layer names the source layer (``source_part``) it is built from.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidGenomeError
from .parts import is_layer_part, layer_part

__all__ = ["PartMerge", "MergePlan"]


@dataclass(frozen=True)
class PartMerge:
    """How one output part is built: ``method`` applied to ``source_part`` of each of ``sources``.

    ``params`` holds the method's parameters as ``(name, values)`` pairs (one value per source, or one
    for the part); ``base`` is the pool index of the base model for task-vector methods.
    """

    method: str
    sources: tuple[int, ...]
    source_part: str
    params: tuple[tuple[str, tuple[float, ...]], ...] = ()
    base: int | None = None

    @property
    def kwargs(self) -> dict[str, tuple[float, ...]]:
        return dict(self.params)

    def sort_key(self) -> tuple:
        """A total order on steps (``None`` sorts first), for grouping plans that share prefixes."""
        return (self.method, self.sources, self.source_part, self.params, -1 if self.base is None else self.base)


@dataclass(frozen=True)
class MergePlan:
    """Per output part (in network order), how it is merged."""

    parts: tuple[tuple[str, PartMerge], ...]

    @property
    def num_layers(self) -> int:
        return sum(1 for part, _ in self.parts if is_layer_part(part))

    def steps(self) -> tuple[PartMerge, ...]:
        return tuple(step for _, step in self.parts)

    def sort_key(self) -> tuple:
        return tuple(step.sort_key() for _, step in self.parts)

    def to_dict(self) -> dict[str, dict]:
        """JSON-ready form, as written to recipe.json."""
        out = {}
        for part, step in self.parts:
            entry = {"method": step.method, "sources": list(step.sources), "source_part": step.source_part}
            if step.base is not None:
                entry["base"] = step.base
            entry.update({key: list(value) for key, value in step.params})
            out[part] = entry
        return out

    @classmethod
    def from_dict(cls, data: dict[str, dict]) -> MergePlan:
        steps = []
        for part, step in data.items():
            params = tuple(
                (key, tuple(value)) for key, value in step.items()
                if key not in ("method", "sources", "source_part", "base", "note")
            )
            steps.append((part, PartMerge(step["method"], tuple(step["sources"]), step["source_part"], params,
                                          step.get("base"))))
        return cls(tuple(steps))

    def validate(self, part_names: list[str], num_entries: int, methods: dict) -> None:
        """Raise InvalidGenomeError when the plan cannot be built from sources with ``part_names``."""
        planned = [part for part, _ in self.parts]
        expected = ["embed", *(layer_part(i) for i in range(self.num_layers)), "head"]
        expected = [part for part in expected if part in planned or part in part_names]
        if planned != expected or self.num_layers == 0:
            raise InvalidGenomeError(f"plan parts {planned} are not embed, layers.0..N-1, head")
        for part, step in self.parts:
            if step.method not in methods:
                raise InvalidGenomeError(f"part {part}: unknown merge method {step.method!r}")
            if step.source_part not in part_names or is_layer_part(step.source_part) != is_layer_part(part) \
                    or (not is_layer_part(part) and step.source_part != part):
                raise InvalidGenomeError(f"part {part}: cannot be built from source part {step.source_part!r}")
            indices = [*step.sources, *([] if step.base is None else [step.base])]
            if not step.sources or any(not 0 <= k < num_entries for k in indices):
                raise InvalidGenomeError(f"part {part}: source indices {indices} outside 0..{num_entries - 1}")
            methods[step.method].check(part, step)
