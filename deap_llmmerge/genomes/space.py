"""What a genome is decoded against: parts, sources, base model, gene sharing and family settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..models.parts import is_layer_part

__all__ = ["GenomeSpace", "parse_granularity"]


def parse_granularity(value: str) -> int | None:
    """``layer`` -> 1, ``group:K`` -> K, ``global`` -> None (every part shares one set of genes)."""
    if value == "layer":
        return 1
    if value == "global":
        return None
    if value.startswith("group:"):
        try:
            size = int(value.split(":", 1)[1])
        except ValueError:
            size = 0
        if size >= 1:
            return size
    raise ConfigError(f"genome_granularity {value!r}: use layer, group:K (K >= 1) or global")


@dataclass(frozen=True)
class GenomeSpace:
    """Everything decode needs besides the genome. Small and picklable: it travels with the toolbox."""

    part_names: tuple[str, ...]
    n_sources: int
    base_index: int = 0
    granularity: str = "layer"
    method: str | None = None
    search_methods: tuple[str, ...] = ()
    negative_weights: bool = False
    method_options: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    seed: int = 0
    depth: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        parse_granularity(self.granularity)

    @property
    def num_layers(self) -> int:
        return sum(1 for part in self.part_names if is_layer_part(part))

    def groups(self) -> list[list[int]]:
        """Indices of the parts that share one set of genes, in network order."""
        size = parse_granularity(self.granularity)
        if size is None:
            return [list(range(len(self.part_names)))]
        groups: list[list[int]] = []
        layer_group: list[int] = []
        for index, part in enumerate(self.part_names):
            if is_layer_part(part):
                layer_group.append(index)
                if len(layer_group) == size:
                    groups.append(layer_group)
                    layer_group = []
                continue
            if layer_group:
                groups.append(layer_group)
                layer_group = []
            groups.append([index])
        if layer_group:
            groups.append(layer_group)
        return sorted(groups, key=lambda group: group[0])

    def options(self, method: str) -> dict[str, object]:
        return dict(dict(self.method_options).get(method, ()))
