"""What a merge kernel reads for one parameter tensor, with the derived tensors cached per process.

A task vector (source - base) and the ranks of its entries by magnitude depend only on the source, not on
the genome, so a search computes them once per tensor and every later candidate reuses them: a
magnitude-sparsified task vector is then one comparison per entry instead of a sort.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

__all__ = ["MergeInputs", "DerivedCache", "top_mask"]

SAMPLE = 1 << 16


def sorted_sample(values: torch.Tensor) -> torch.Tensor:
    """A fixed random sample of the 1-d ``values``, sorted: it brackets any quantile of them."""
    generator = torch.Generator(device=values.device).manual_seed(0)
    picks = torch.randint(values.numel(), (min(SAMPLE, values.numel()),), generator=generator, device=values.device)
    return values[picks].sort().values


def _bracketed(values: torch.Tensor, k: int, sample: torch.Tensor) -> torch.Tensor | None:
    """The k-th largest of ``values``, found among the values that ``sample`` says lie near it (a few
    comparisons per value instead of a selection over all of them), or None when the bracket misses."""
    n, size = values.numel(), sample.numel()
    share = 1 - k / n
    margin = 6 * (share * (1 - share) / size) ** 0.5 + 2 / size
    low = sample[max(0, int((share - margin) * size))]
    high = sample[min(size - 1, int((share + margin) * size) + 1)]
    above = int((values > high).sum())
    need = k - above
    if need <= 0:
        return None
    band = values[(values >= low) & (values <= high)]
    return torch.kthvalue(band, band.numel() - need + 1).values if need <= band.numel() else None


def top_mask(values: torch.Tensor, k: int, sample: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of the ``k`` largest of the 1-d ``values`` (equal values: the lowest indices first), in
    linear time: a selection of the threshold, not a sort (within a bracket from ``sample``, when given)."""
    n = values.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    threshold = _bracketed(values, k, sample) if sample is not None and n > 4 * sample.numel() else None
    if threshold is None:
        threshold = torch.kthvalue(values, n - k + 1).values
    mask = values >= threshold
    extra = int(mask.sum()) - k
    if extra > 0:  # entries equal to the threshold beyond k: the highest indices leave
        ties = (values == threshold).nonzero().flatten()
        mask[ties[ties.numel() - extra:]] = False
    return mask


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

    def largest(self, i: int, k: int) -> torch.Tensor:
        """Bool mask of the ``k`` entries of task vector i with the largest magnitude (ties: lowest index)."""
        magnitude = self._cached(i, "magnitude", lambda: self.delta(i).abs().reshape(-1))
        sample = self._cached(i, "magnitude sample", lambda: sorted_sample(magnitude))
        return top_mask(magnitude, k, sample).view_as(self.delta(i))

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
