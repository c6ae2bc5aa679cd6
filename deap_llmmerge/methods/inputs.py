"""What a merge kernel reads for one parameter tensor, with the derived tensors cached per process.

A task vector (source - base) and the ranks of its entries by magnitude depend only on the source, not on
the genome, so a search computes them once per tensor and every later candidate reuses them: a
magnitude-sparsified task vector is then one comparison per entry instead of a sort.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

__all__ = ["MergeInputs", "DerivedCache"]


class DerivedCache:
    """Tensors derived from the sources, least recently used first out beyond ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.size = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        size = value.numel() * value.element_size()
        if size <= self.limit_bytes:
            while self._items and self.size + size > self.limit_bytes:
                _, old = self._items.popitem(last=False)
                self.size -= old.numel() * old.element_size()
            self._items[key] = value
            self.size += size
        return value


class MergeInputs:
    """The tensors one step merges for one parameter: each source's, the base model's, and (cached under
    ``keys``, one per source, when a cache is given) the task vectors and the magnitude ranks of their entries."""

    def __init__(self, tensors: Sequence[torch.Tensor], base: torch.Tensor | None = None,
                 cache: DerivedCache | None = None, keys: Sequence[Hashable] = ()) -> None:
        self.tensors = tensors
        self.base_tensor = base
        self.cache = cache
        self.keys = keys

    def __len__(self) -> int:
        return len(self.tensors)

    def source(self, i: int) -> torch.Tensor:
        return self.tensors[i].float()

    def base(self) -> torch.Tensor:
        return self.base_tensor.float()

    def _cached(self, i: int, kind: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.cache is None or not self.keys:
            return make()
        return self.cache.get((self.keys[i], kind), make)

    def delta(self, i: int) -> torch.Tensor:
        """Source i's task vector, source - base, in float32 (never modify it: it may be cached)."""
        return self._cached(i, "delta", lambda: self.source(i) - self.base())

    def descending_rank(self, i: int) -> torch.Tensor:
        """Per entry of the flattened task vector, its rank by magnitude (0 = largest), int32; ties by position."""
        def make() -> torch.Tensor:
            magnitude = self.delta(i).abs().reshape(-1)
            order = torch.argsort(magnitude, descending=True, stable=True)
            rank = torch.empty_like(order, dtype=torch.int32)
            rank[order] = torch.arange(len(order), dtype=torch.int32, device=order.device)
            return rank

        return self._cached(i, "descending_rank", make)

    def row_rank(self, i: int) -> torch.Tensor:
        """Per entry, its rank by magnitude within its row (0 = smallest; a 1-d tensor is one row), int32."""
        def make() -> torch.Tensor:
            delta = self.delta(i)
            rows = delta.reshape(delta.shape[0], -1) if delta.dim() >= 2 else delta.reshape(1, -1)
            order = torch.argsort(rows.abs(), dim=1, stable=True)
            rank = torch.empty_like(order, dtype=torch.int32)
            rank.scatter_(1, order, torch.arange(rows.shape[1], dtype=torch.int32, device=order.device)
                          .expand_as(order).contiguous())
            return rank

        return self._cached(i, "row_rank", make)
