"""What a merge kernel reads for one parameter tensor, with the derived tensors cached per process.

A task vector (source - base) and a coarse ranking of its entries by magnitude depend only on the source,
not on the genome, so a search computes them once per tensor and every later candidate reuses them: a
magnitude-sparsified task vector is then a comparison per entry and a sort of one small bucket, not a
selection over the whole tensor. Kernels also reuse work buffers between candidates (a fresh tensor of
this size costs more than an arithmetic pass over it) and write straight into the engine's model.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

__all__ = ["MergeInputs", "DerivedCache", "top_mask", "top_indicator", "magnitude_buckets"]

BUCKETS = 1 << 15


def magnitude_buckets(values: torch.Tensor) -> torch.Tensor:
    """Per entry of the float32 ``values`` (flattened), the top 16 bits of its magnitude's float32 bits:
    8 exponent and 7 mantissa bits, as int16 in [0, 32768). A larger magnitude never falls in a lower
    bucket, and one bucket spans under 1% of its magnitudes, so the k-th largest is found by counting."""
    flat = values.reshape(-1)
    if sys.byteorder == "little" and flat.dtype == torch.float32 and flat.is_contiguous():
        return flat.view(torch.int16)[1::2] & 0x7FFF  # the high half of each float, its sign cleared
    return (flat.float().abs().view(torch.int32) >> 16).to(torch.int16)


def tail_counts(buckets: torch.Tensor) -> torch.Tensor:
    """``out[b]``: how many entries lie in bucket b or above."""
    return torch.bincount(buckets, minlength=BUCKETS).flip(0).cumsum(0).flip(0)


def _edge(tails: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket of the k-th largest magnitude (tails never grow with the bucket), and how many entries lie
    in the buckets above it."""
    edge = int((tails >= k).sum()) - 1
    return edge, int(tails[edge + 1]) if edge + 1 < BUCKETS else 0


def _chosen_in(values: torch.Tensor, buckets: torch.Tensor, edge: int, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest magnitudes of bucket ``edge`` (equal magnitudes: lowest index first)."""
    inside = (buckets == edge).nonzero().flatten()
    if count < inside.numel():
        magnitudes = values.reshape(-1)[inside].abs()
        if magnitudes.min() < magnitudes.max():  # (all equal, as in an untouched tensor: the first ones)
            inside = inside[torch.sort(magnitudes, descending=True, stable=True).indices]
        inside = inside[:count]
    return inside


def top_indicator(values: torch.Tensor, k: int, buckets: torch.Tensor, tails: torch.Tensor,
                  out: torch.Tensor) -> torch.Tensor:
    """Float32 0/1 in ``out`` (shaped like ``values``): 1 for the ``k`` entries with the largest magnitude
    (equal magnitudes: the lowest indices first). Every entry of a bucket above the k-th largest's is in;
    within that one bucket a sort picks the rest. ``buckets`` is :func:`magnitude_buckets` of ``values`` as
    float32 (three float passes, several times faster than a bool mask's conversion), ``tails`` its
    :func:`tail_counts`."""
    n = values.numel()
    if k <= 0 or k >= n:
        return out.fill_(float(k > 0))
    edge, above = _edge(tails, k)
    flat = torch.sub(buckets, edge, out=out.view(-1)).clamp_(0, 1)
    flat[_chosen_in(values, buckets, edge, k - above)] = 1
    return out


def top_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`top_indicator` of the 1-d ``values`` as a bool mask, nothing cached."""
    buckets = magnitude_buckets(values)
    out = torch.empty(values.numel(), dtype=torch.float32, device=values.device)
    return top_indicator(values, k, buckets.float(), tail_counts(buckets), out).bool()


class DerivedCache:
    """Tensors derived from the sources, least recently used first out beyond ``limit_bytes``, and the
    work buffers of the kernels (the last few shapes' worth)."""

    def __init__(self, limit_bytes: int, buffer_shapes: int = 4) -> None:
        self.limit_bytes = limit_bytes
        self.size = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.buffer_shapes = buffer_shapes
        self._buffers: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()

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

    def buffer(self, name: str, like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A work buffer of ``like``'s shape and device (contents undefined), the same one on every call.
        The buffers of the least recently used shapes go beyond ``buffer_shapes`` shapes or half the limit."""
        key = (tuple(like.shape), like.device)
        buffers = self._buffers.setdefault(key, {})
        self._buffers.move_to_end(key)
        if (name, dtype) not in buffers:
            with torch.inference_mode(False):  # a normal tensor: writable in and outside inference mode
                buffers[(name, dtype)] = torch.empty(like.shape, dtype=dtype, device=like.device)
            while len(self._buffers) > 1 and (len(self._buffers) > self.buffer_shapes
                                              or self._buffer_bytes() > self.limit_bytes // 2):
                self._buffers.popitem(last=False)
        return buffers[(name, dtype)]

    def _buffer_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for buffers in self._buffers.values() for t in buffers.values())


class MergeInputs:
    """The tensors one step merges for one parameter: each source's, the base model's, and (cached under
    ``keys``, one per source, when a cache is given) the task vectors and the magnitude buckets of their
    entries. ``out``, when given, is a float32 tensor the kernel may write its result into."""

    def __init__(self, tensors: Sequence[torch.Tensor], base: torch.Tensor | None = None,
                 cache: DerivedCache | None = None, keys: Sequence[Hashable] = (),
                 out: torch.Tensor | None = None) -> None:
        self.tensors = tensors
        self.base_tensor = base
        self.cache = cache
        self.keys = keys
        self.out = out

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

    def buffer(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A work buffer shaped like the sources (reused across merges when there is a cache)."""
        like = self.tensors[0]
        if self.cache is None:
            return torch.empty(like.shape, dtype=dtype, device=like.device)
        return self.cache.buffer(name, like, dtype)

    def output(self) -> torch.Tensor:
        """Where to write the result: ``out`` when given, else a new float32 tensor."""
        like = self.tensors[0]
        if self.out is not None and self.out.dtype == torch.float32 and self.out.shape == like.shape:
            return self.out
        return torch.empty(like.shape, dtype=torch.float32, device=like.device)

    def delta(self, i: int) -> torch.Tensor:
        """Source i's task vector, source - base, in float32 (never modify it: it may be cached)."""
        return self._cached(i, "delta", lambda: self.source(i) - self.base())

    def l1(self, i: int) -> float:
        """The L1 norm of task vector i."""
        def make() -> torch.Tensor:
            return self.delta(i).abs().sum().reshape(1)

        return float(self._cached(i, "l1", make))

    def largest(self, i: int, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Float 0/1 indicator of the ``k`` entries of task vector i with the largest magnitude (equal ones:
        lowest index first), in ``out`` or a work buffer."""
        delta = self.delta(i)
        buckets = self._cached(i, "magnitude buckets", lambda: magnitude_buckets(delta).float())
        tails = self._cached(i, "bucket tails", lambda: tail_counts(buckets.to(torch.int16)))
        return top_indicator(delta, k, buckets, tails, self.buffer("largest") if out is None else out)

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
