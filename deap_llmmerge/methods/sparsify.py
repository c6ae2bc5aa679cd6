"""Which entries of a task vector survive, as mergekit's sparsify.py decides them: the largest
(``magnitude``, TIES), at random (``random_keep``, DARE), the largest but outliers (``outliers``,
breadcrumbs), at random with magnitude-ranked odds (``magprune``, della).

A sparsifier returns a :class:`Keep` that writes its decision block by block as float 0/1 (or None: keep
everything). Random draws come from a CPU generator the engine seeds per (run seed, part, tensor, genes).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from .inputs import MergeInputs

__all__ = ["Keep", "magnitude", "random_keep", "outliers", "magprune", "draw_generator", "uniform_draws",
           "word_count", "below"]


class Keep(Protocol):
    """Which entries of one task vector survive: ``block(start, end, out)`` writes float 0/1 for entries
    ``start:end`` into ``out`` and returns it."""

    def block(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor: ...


class Nothing:
    def block(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        return out.zero_()


class Outliers:
    """The entries of ``outer`` that are not in ``inner`` (``inner`` within ``outer``)."""

    def __init__(self, outer: Keep, inner: Keep, spare: torch.Tensor) -> None:
        self.outer, self.inner, self.spare = outer, inner, spare

    def block(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        return self.outer.block(start, end, out).sub_(self.inner.block(start, end, self.spare[:end - start]))


class DrawStream:
    """One task vector's uniform 16-bit draws (see :func:`uniform_draws`): drawn block by block as a pass
    reads the blocks in order (no whole-tensor buffer), or whole up front (:meth:`draw_whole`) for a pass
    that reads every source's block before the next block. The numbers are the same either way, as the
    generator fills the words in order and each block starts at a multiple of four entries (where blocks
    do not, the draws are drawn whole)."""

    def __init__(self, inputs: MergeInputs, i: int, generator: torch.Generator | None) -> None:
        self.inputs, self.i, self.generator = inputs, i, generator
        self.whole: torch.Tensor | None = None
        self.position = 0

    def draw_whole(self) -> None:
        if self.position:
            raise RuntimeError("draws already streamed cannot be drawn whole")
        if self.whole is None:
            words = self.inputs.buffer(f"draws {self.i}", (word_count(self.inputs.numel),), torch.int64)
            self.whole = uniform_draws(self.inputs.shape, self.generator, self.inputs.device, words).reshape(-1)

    def block(self, start: int, end: int) -> torch.Tensor:
        """The draws of entries ``start:end`` (int16)."""
        if self.whole is None and self.inputs.block_size() % 4 and self.inputs.numel > self.inputs.block_size():
            self.draw_whole()
        if self.whole is not None:
            return self.whole[start:end]
        if start != self.position:
            raise RuntimeError("streamed draws are read block after block, from the first")
        words = self.inputs.buffer("draw words", (word_count(self.inputs.block_size()),), torch.int64)
        words = words[:word_count(end - start)]
        self.position = end
        return uniform_draws(torch.Size([end - start]), self.generator, self.inputs.device, words)


class Draws:
    """Keep where a uniform 16-bit draw falls below ``threshold``, as float 0/1: the draws are copied into
    the float32 output, then compared in place (faster than a bool mask's conversion, or a comparison of
    int16 with float32). The draws are whole numbers, so ``draw < threshold`` is ``draw < ceil(threshold)``,
    which is exact in float32."""

    def __init__(self, draws: DrawStream, threshold: float) -> None:
        self.draws = draws
        self.threshold = torch.tensor(float(math.ceil(threshold)), device=draws.inputs.device)

    def block(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        return torch.lt(out.copy_(self.draws.block(start, end)), self.threshold, out=out)


class RankedDraws:
    """Keep where a uniform 16-bit draw falls below ``slope * rank + intercept`` (della's per-entry
    threshold, float32), as float 0/1 (compared as :class:`Draws` does)."""

    def __init__(self, draws: DrawStream, rank: torch.Tensor, slope: float, intercept: float,
                 spare: torch.Tensor) -> None:
        self.draws, self.rank = draws, rank.reshape(-1)
        self.slope, self.intercept, self.spare = slope, intercept, spare

    def block(self, start: int, end: int, out: torch.Tensor) -> torch.Tensor:
        threshold = self.spare[:end - start].copy_(self.rank[start:end]).mul_(self.slope).add_(self.intercept)
        return torch.lt(out.copy_(self.draws.block(start, end)), threshold, out=out)


def magnitude(inputs: MergeInputs, i: int, density: float, **_: object) -> Keep | None:
    """Keep the ``density`` share of entries with the largest magnitude (at least one)."""
    if density >= 1:
        return None
    if density <= 0 or inputs.numel == 0:
        return Nothing()
    return inputs.largest(i, max(1, int(density * inputs.numel)))


def draw_generator(seed: int) -> torch.Generator:
    """The generator of a random method's draws: on the CPU whatever device merges, so that a recipe found on
    a GPU builds the same model on a CPU (a GPU's generator gives other numbers for the same seed)."""
    return torch.Generator(device="cpu").manual_seed(seed)


def uniform_draws(shape: torch.Size, generator: torch.Generator | None, device: torch.device,
                  words: torch.Tensor | None = None) -> torch.Tensor:
    """One uniform 16-bit draw per entry (int16, -32768..32767), four to a 64-bit random word (drawn into
    ``words`` when given): a keep probability p is ``draws < below(p)``, exact to 1/65536. The words are drawn
    where the generator is (the CPU's, see :func:`draw_generator`) and copied to ``device`` when it differs."""
    count = shape.numel()
    where = generator.device if generator is not None else torch.device("cpu")
    target = words if words is not None else torch.empty(word_count(count), dtype=torch.int64, device=device)
    drawn = target if target.device == where else torch.empty(target.shape, dtype=torch.int64, device=where)
    drawn.random_(-2**63, None, generator=generator)
    if drawn is not target:
        target.copy_(drawn)
    return target.view(torch.int16)[:count].view(shape)


def word_count(entries: int) -> int:
    """How many 64-bit random words :func:`uniform_draws` draws for ``entries`` entries."""
    return (entries + 3) // 4 or 1


def below(probability: float | torch.Tensor) -> float | torch.Tensor:
    """The int16 threshold under which a uniform draw of :func:`uniform_draws` falls with ``probability``."""
    return probability * 65536 - 32768


def random_keep(inputs: MergeInputs, i: int, density: float, generator: torch.Generator | None = None,
                **_: object) -> Keep | None:
    """DARE: keep each entry with probability ``density`` (one seeded uniform draw per entry)."""
    if density >= 1:
        return None
    return Draws(DrawStream(inputs, i, generator), below(density))


def outliers(inputs: MergeInputs, i: int, density: float, gamma: float = 0.01, **_: object) -> Keep | None:
    """Breadcrumbs: drop the ``gamma`` share of largest entries, then the smallest, to keep ``density``."""
    if density >= 1:
        return None
    n = inputs.numel
    keep, top = int(density * n), int(gamma * n)
    top = min(top, n - keep)  # fewer outliers dropped where the density leaves no room for them
    # the top (gamma) entries are among the top keep + top: subtract them
    return Outliers(inputs.largest(i, keep + top), inputs.largest(i, top), inputs.block_buffer(f"outliers {i}"))


def magprune(inputs: MergeInputs, i: int, density: float, epsilon: float = 0.15,
             generator: torch.Generator | None = None, **_: object) -> Keep | None:
    """DELLA: per row, keep probability from ``density - epsilon`` (smallest |entry|) to ``density + epsilon``
    (largest), drawn from the seeded generator; ``epsilon`` is clipped so both ends stay in (0, 1)."""
    if density >= 1:
        return None
    if density <= 0:
        return Nothing()
    epsilon = min(epsilon, 0.999 * density, 0.999 * (1 - density))
    rank = inputs.row_rank(i)
    span = max(rank.shape[1] - 1, 1)
    # below(density - epsilon + rank * 2 epsilon / span)
    return RankedDraws(DrawStream(inputs, i, generator), rank, 2 * epsilon / span * 65536, below(density - epsilon),
                       inputs.block_buffer(f"threshold {i}"))
