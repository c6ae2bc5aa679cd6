"""What a merge kernel reads for one parameter tensor, block by block, with genome-independent tensors
cached per process.

Merging is a handful of element-wise passes over each tensor, so on a CPU its cost is memory traffic,
not arithmetic. Kernels therefore walk the flattened tensor in blocks of :data:`BLOCK` entries: a block's
task vectors, keep indicators and sums stay in the CPU cache while every pass runs over them, and a task
vector (source - base) is never stored whole. On an accelerator a tensor is one block.

What depends only on the sources is cached per tensor and reused by every later candidate of a search:
each task vector's entries ranked coarsely by magnitude (:func:`magnitude_buckets`), so that keeping the
largest entries is a comparison per entry and a sort of one small bucket, and della's per-row ranks.
Work buffers are reused too: a fresh tensor of this size costs more than an arithmetic pass over it.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch

__all__ = ["BLOCK", "MergeInputs", "DerivedCache", "Largest", "top_mask", "magnitude_buckets"]

BLOCK = 1 << 16  # entries per block on a CPU (256 KiB of float32): a block's work tensors stay in a 2 MiB L2 cache
BUCKETS = 1 << 15


def magnitude_buckets(values: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per entry of the float32 ``values`` (flattened), the top 16 bits of its magnitude's float32 bits:
    8 exponent and 7 mantissa bits, as int16 in [0, 32768). A larger magnitude never falls in a lower
    bucket, and one bucket spans under 1% of its magnitudes, so the k-th largest is found by counting."""
    flat = values.reshape(-1)
    if sys.byteorder == "little" and flat.dtype == torch.float32 and flat.is_contiguous():
        return torch.bitwise_and(flat.view(torch.int16)[1::2], 0x7FFF, out=out)  # the high half, sign cleared
    buckets = (flat.float().abs().view(torch.int32) >> 16).to(torch.int16)
    return buckets if out is None else out.copy_(buckets)


def tail_counts(buckets: torch.Tensor) -> torch.Tensor:
    """``out[b]``: how many entries lie in bucket b or above."""
    return torch.bincount(buckets, minlength=BUCKETS).flip(0).cumsum(0).flip(0)


class Largest:
    """Which ``k`` entries of a flat tensor have the largest magnitude (equal magnitudes: the lowest
    indices first), as float 0/1 written block by block. Every entry of a bucket above the k-th largest's
    is in; within that one bucket a sort of its magnitudes (``magnitude_at(indices)``) picks the rest."""

    def __init__(self, buckets: torch.Tensor, tails: torch.Tensor, k: int,
                 magnitude_at: Callable[[torch.Tensor], torch.Tensor]) -> None:
        n = buckets.numel()
        self.buckets = buckets
        self.constant = float(k > 0) if k <= 0 or k >= n else None
        if self.constant is not None:
            return
        self.edge = int((tails >= k).sum()) - 1  # tails never grow with the bucket
        above = int(tails[self.edge + 1]) if self.edge + 1 < BUCKETS else 0
        inside = (buckets == self.edge).nonzero().flatten()
        count = k - above
        if count < inside.numel():
            magnitudes = magnitude_at(inside)
            if magnitudes.min() < magnitudes.max():
                inside = inside[torch.sort(magnitudes, descending=True, stable=True).indices[:count]].sort().values
            else:  # all equal, as in an untouched tensor: the first ones
                inside = inside[:count]
        self.chosen = inside  # ascending

    def block(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        """The indicator of entries ``start:end`` in ``out`` (float32, ``end - start`` entries)."""
        if self.constant is not None:
            return out.fill_(self.constant)
        out.copy_(self.buckets[start:end]).sub_(self.edge).clamp_(0, 1)
        if self.chosen.numel():
            lo, hi = torch.searchsorted(self.chosen, torch.tensor([start, end], device=self.chosen.device)).tolist()
            out[self.chosen[lo:hi] - start] = 1
        return out


def top_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """The bool mask of :class:`Largest` over the 1-d ``values``, nothing cached."""
    buckets = magnitude_buckets(values)
    largest = Largest(buckets, tail_counts(buckets), k, lambda at: values.reshape(-1)[at].abs())
    return largest.block(0, values.numel(), torch.empty(values.numel(), device=values.device)).bool()


class DerivedCache:
    """Tensors derived from the sources, least recently used first out beyond ``limit_bytes``, and the
    work buffers of the kernels (the last few shapes' worth)."""

    def __init__(self, limit_bytes: int, buffer_shapes: int = 16) -> None:
        self.limit_bytes = limit_bytes
        self.size = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.buffer_shapes = buffer_shapes
        self._buffers: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        found = self.peek(key)
        if found is not None:
            return found
        value = make()
        size = value.numel() * value.element_size()
        if size <= self.limit_bytes:
            while self._items and self.size + size > self.limit_bytes:
                _, old = self._items.popitem(last=False)
                self.size -= old.numel() * old.element_size()
            self._items[key] = value
            self.size += size
        return value

    def peek(self, key: Hashable) -> torch.Tensor | None:
        """The tensor cached under ``key``, or None (nothing is computed)."""
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def buffer(self, name: str, shape: Sequence[int], device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A work buffer of this shape (contents undefined), the same one on every call. The buffers of the
        least recently used shapes go beyond ``buffer_shapes`` shapes or half the limit."""
        key = (tuple(shape), device)
        buffers = self._buffers.setdefault(key, {})
        self._buffers.move_to_end(key)
        if (name, dtype) not in buffers:
            with torch.inference_mode(False):  # a normal tensor: writable in and outside inference mode
                buffers[(name, dtype)] = torch.empty(tuple(shape), dtype=dtype, device=device)
            while len(self._buffers) > 1 and (len(self._buffers) > self.buffer_shapes
                                              or self._buffer_bytes() > self.limit_bytes // 2):
                self._buffers.popitem(last=False)
        return buffers[(name, dtype)]

    def _buffer_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for buffers in self._buffers.values() for t in buffers.values())


class MergeInputs:
    """The tensors one step merges for one parameter: each source's and the base model's, read whole or
    block by block, and (cached under ``keys``, one per source, when a cache is given) what a search reuses.
    ``out``, when given, is a float32 tensor the kernel may write its result into."""

    def __init__(self, tensors: Sequence[torch.Tensor], base: torch.Tensor | None = None,
                 cache: DerivedCache | None = None, keys: Sequence[Hashable] = (),
                 out: torch.Tensor | None = None) -> None:
        self.tensors = tensors
        self.base_tensor = base
        self.cache = cache
        self.keys = keys
        self.out = out
        self.shape = tensors[0].shape
        self.numel = tensors[0].numel()
        self.device = tensors[0].device

    def __len__(self) -> int:
        return len(self.tensors)

    def source(self, i: int) -> torch.Tensor:
        return self.tensors[i].float()

    def base(self) -> torch.Tensor:
        return self.base_tensor.float()

    def delta(self, i: int) -> torch.Tensor:
        """Source i's task vector, source - base, in float32 (a new tensor)."""
        return self.source(i) - self.base()

    def _cached(self, i: int, kind: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.cache is None or not self.keys:
            return make()
        return self.cache.get((self.keys[i], kind), make)

    def known(self, i: int, kind: str) -> torch.Tensor | None:
        """What is cached for source i under ``kind``, or None (nothing is computed)."""
        return None if self.cache is None or not self.keys else self.cache.peek((self.keys[i], kind))

    def remember(self, i: int, kind: str, value: torch.Tensor) -> None:
        """Cache ``value`` for source i under ``kind`` (a no-op without a cache)."""
        self._cached(i, kind, lambda: value)

    def buffer(self, name: str, shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A work buffer shaped like the sources (or ``shape``), reused across merges when there is a cache."""
        shape = self.shape if shape is None else shape
        if self.cache is None:
            return torch.empty(tuple(shape), dtype=dtype, device=self.device)
        return self.cache.buffer(name, shape, self.device, dtype)

    def output(self) -> torch.Tensor:
        """Where to write the result: ``out`` when given, else a new float32 tensor."""
        if self.out is not None and self.out.dtype == torch.float32 and self.out.shape == self.shape:
            return self.out
        return torch.empty(self.shape, dtype=torch.float32, device=self.device)

    # block by block
    def block_size(self) -> int:
        """Entries per block: :data:`BLOCK` on a CPU, the whole tensor on an accelerator."""
        return min(self.numel, BLOCK) if self.device.type == "cpu" else self.numel

    def blocks(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each block of the flattened tensors."""
        step = max(self.block_size(), 1)
        return [(start, min(self.numel, start + step)) for start in range(0, self.numel, step)]

    def block_buffer(self, name: str) -> torch.Tensor:
        """A float32 work buffer of one block (slice it to the block's length)."""
        return self.buffer(name, (self.block_size(),))

    def base_block(self, start: int, end: int) -> torch.Tensor:
        """Entries ``start:end`` of the flattened base in float32 (a view, or a copy in a work buffer)."""
        block = self.base_tensor.reshape(-1)[start:end]
        return block if block.dtype == torch.float32 else self.block_buffer("base")[:end - start].copy_(block)

    def delta_block(self, i: int, start: int, end: int, base: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Entries ``start:end`` of task vector i in ``out``, given the same entries of the base (float32)."""
        block = self.tensors[i].reshape(-1)[start:end]
        if block.dtype == torch.float32:
            return torch.sub(block, base, out=out)
        return out.copy_(block).sub_(base)

    def delta_at(self, i: int, indices: torch.Tensor) -> torch.Tensor:
        """Task vector i's entries at these flat indices."""
        return self.tensors[i].reshape(-1)[indices].float() - self.base_tensor.reshape(-1)[indices].float()

    # cached per source
    def buckets(self, i: int) -> torch.Tensor:
        """:func:`magnitude_buckets` of task vector i (int16, flat), computed block by block."""
        def make() -> torch.Tensor:
            out = torch.empty(self.numel, dtype=torch.int16, device=self.device)
            work = self.block_buffer("delta")
            for start, end in self.blocks():
                delta = self.delta_block(i, start, end, self.base_block(start, end), work[:end - start])
                magnitude_buckets(delta, out=out[start:end])
            return out

        return self._cached(i, "magnitude buckets", make)

    def largest(self, i: int, k: int) -> Largest:
        """The ``k`` entries of task vector i with the largest magnitude (equal ones: lowest index first)."""
        buckets = self.buckets(i)
        tails = self._cached(i, "bucket tails", lambda: tail_counts(buckets))
        return Largest(buckets, tails, k, lambda at: self.delta_at(i, at).abs())

    def row_rank(self, i: int) -> torch.Tensor:
        """Per entry of task vector i, its rank by magnitude within its row (0 = smallest; a 1-d tensor is one
        row): int16 where rows are at most 32768 long, else int32."""
        def rows(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.reshape(tensor.shape[0], -1) if tensor.dim() >= 2 else tensor.reshape(1, -1)

        return self._cached(i, "row_rank", lambda: _row_rank(rows(self.tensors[i]), rows(self.base_tensor)))


def _row_rank(rows: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """Per entry of a 2-d tensor (minus ``base``, when given), its rank by magnitude within its row, ties in
    column order: int16 where rows are at most 32768 long, else int32.

    Each entry's int64 key holds its magnitude's float32 bits (the sign bit cleared: ordered as the
    magnitudes are) in the high half and its column in the low half. The keys are distinct, so every sort
    gives the same order on every CPU and GPU, and sorting the keys alone carries the permutation in their
    low halves. On CPU, numpy's vectorised sort of the keys is 4-9x faster than torch's stable argsort, and
    the rows go a few at a time (about :data:`BLOCK` entries), so that their differences and keys stay in
    the CPU cache from the subtraction to the ranks written (about 1.8x faster on a 32000 x 512 embedding)."""
    r, n = rows.shape
    device = rows.device
    step = max(1, BLOCK // max(n, 1)) if device.type == "cpu" else r
    rank = torch.empty((r, n), dtype=torch.int16 if n <= 32768 else torch.int32, device=device)
    keys = torch.empty((min(step, r), n), dtype=torch.int64, device=device)
    work = torch.empty((min(step, r), n), dtype=torch.float32, device=device)
    low, high = (0, 1) if sys.byteorder == "little" else (1, 0)
    columns = torch.arange(n, dtype=torch.int32, device=device)
    positions = columns.to(rank.dtype)
    for start in range(0, r, step):
        end = min(r, start + step)
        values = work[:end - start]
        if base is None:
            values.copy_(rows[start:end])
        elif rows.dtype == base.dtype == torch.float32:
            torch.sub(rows[start:end], base[start:end], out=values)
        else:  # (in float32, as MergeInputs.delta)
            values.copy_(rows[start:end]).sub_(base[start:end])
        chunk = keys[:end - start]
        halves = chunk.view(torch.int32).view(end - start, n, 2)
        halves[..., low] = columns
        torch.bitwise_and(values.view(torch.int32), 0x7FFFFFFF, out=halves[..., high])
        if device.type == "cpu":
            chunk.numpy().sort(axis=1)
        else:
            chunk = torch.sort(chunk, dim=1).values
        order = chunk.bitwise_and_(0xFFFFFFFF)
        rank[start:end].scatter_(1, order, positions.expand(end - start, n))
    return rank
