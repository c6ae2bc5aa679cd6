"""Task-vector methods (mergekit's generalized task arithmetic): per source, the task vector source - base
is sparsified, weighted, optionally sign-elected (TIES), combined and added back to the base.

    task_arithmetic   no sparsification, plain sum           (normalize off)
    ties              keep the largest |entries|, elect signs (normalize on)
    dare_ties         keep entries at random, elect signs     (rescale on)
    dare_linear       keep entries at random, plain sum       (rescale on)
    breadcrumbs       drop the largest (gamma) and the smallest entries, plain sum
    della             keep with probability rising with |entry| (density +- epsilon), elect signs
                      (normalize and rescale on)

A sparsifier decides, for the whole tensor, which entries of a task vector survive (a :class:`Keep`) and
writes that decision block by block as float 0/1; :func:`combine` walks the blocks (see
:mod:`.inputs`). Random draws come from the generator the engine seeds per (run seed, part, tensor, genes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from . import register_merge_method
from .inputs import MergeInputs


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


def _sparsified(inputs: MergeInputs, keeps: Sequence[Keep | None],
                output: torch.Tensor) -> tuple[list[torch.Tensor | None], list[float]]:
    """Per source with a keep: its kept entries of the task vector (the dropped ones 0; a whole float32
    tensor, so the merge pass reads them instead of the source and the keep again), and its rescale factor:
    the task vector's L1 norm over the kept entries' (1 where either is about 0, or nothing is dropped).

    One source after the other, so that random keeps draw block by block in the generator's order. The
    first source's kept entries go into ``output`` (flat, float32): the merge pass reads a block of them
    before it writes the same block of the result."""
    sparse, factors = [], []
    kept, scratch = inputs.block_buffer("keep"), inputs.block_buffer("work")
    for i, keep in enumerate(keeps):
        if keep is None:
            sparse.append(None)
            factors.append(1.0)
            continue
        into = output if all(s is None for s in sparse) else inputs.buffer(f"kept delta {i}").view(-1)
        norm = inputs.known(i, "L1 norm")  # the task vector's, the same for every candidate of a search
        before, after = (0.0 if norm is None else float(norm)), 0.0
        for start, end in inputs.blocks():
            delta = inputs.delta_block(i, start, end, inputs.base_block(start, end), into[start:end])
            magnitudes = torch.abs(delta, out=scratch[:end - start])
            keep_block = keep.block(start, end, kept[:end - start])
            if norm is None:
                before += float(magnitudes.sum())
            after += float(torch.dot(magnitudes, keep_block))
            delta.mul_(keep_block)
        if norm is None:
            inputs.remember(i, "L1 norm", torch.tensor(before, dtype=torch.float64))
        sparse.append(into)
        factors.append(1.0 if before < 1e-7 or after < 1e-7 else before / after)
    return sparse, factors


def combine(inputs: MergeInputs, sparsify, elect_signs: bool, weight: Sequence[float],
            density: Sequence[float] | None = None, normalize: bool = False, rescale: bool = False,
            generator: torch.Generator | None = None, scale: float = 1.0,
            per_source: dict[str, Sequence[float]] | None = None) -> torch.Tensor:
    """base + scale * combine(weight_i * sparsify(task vector i)), as mergekit's generalized task arithmetic,
    one block of entries at a time.

    Each source's kept entries come as float 0/1. A rescaled source (DARE, della) needs its factor (its task
    vector's L1 norm over the kept entries') before the merge: a first pass sums both norms and writes the
    kept entries, which the merge pass reads instead of the source, and the factor joins the weight.

    TIES sign election needs no mask per source: with s = the sum of the weighted task vectors and m = the
    sum of their magnitudes, the entries that agree with the sign of s add up to sign(s) (m + |s|) / 2, since
    the agreeing and the disagreeing parts differ by |s| in magnitude and add up to m. The divisor (the
    weights of the agreeing, nonzero entries) needs one comparison per source, and only when normalizing.
    """
    per_source = per_source or {}
    count = len(inputs)
    keeps = [None if sparsify is None else sparsify(inputs, i, density[i], generator=generator,
                                                    **{key: values[i] for key, values in per_source.items()})
             for i in range(count)]
    weights, sparse = list(weight), [None] * count
    result = inputs.output()
    flat = result.view(-1)
    if rescale and any(keep is not None for keep in keeps):
        sparse, factors = _sparsified(inputs, keeps, flat)
        weights = [w * f for w, f in zip(weight, factors)]
        keeps = [None] * count  # applied: the merge pass reads the kept entries
    for keep in keeps:  # the merge pass reads every source's block in turn: draw whole, in source order
        draws = getattr(keep, "draws", None)
        if draws is not None:
            draws.draw_whole()
    total, magnitudes, work = (inputs.block_buffer(name) for name in ("total", "magnitudes", "work"))
    deltas = [inputs.block_buffer(f"delta {i}") for i in range(count)]
    kept = [inputs.block_buffer(f"keep {i}") for i in range(count)]
    half = 0.5 if elect_signs else 1.0
    total_weight = sum(weight)
    for start, end in inputs.blocks():
        size = end - start
        base = inputs.base_block(start, end)
        s, m, scratch = total[:size].zero_(), magnitudes[:size].zero_(), work[:size]
        sources = []
        for i, keep in enumerate(keeps):
            delta = sparse[i][start:end] if sparse[i] is not None else inputs.delta_block(i, start, end, base,
                                                                                           deltas[i][:size])
            keep = None if keep is None else keep.block(start, end, kept[i][:size])
            w = weights[i]
            if keep is None:
                s.add_(delta, alpha=w)
                if elect_signs:
                    m.add_(torch.abs(delta, out=scratch), alpha=abs(w))
            else:
                s.addcmul_(delta, keep, value=w)
                if elect_signs:
                    m.add_(torch.abs(delta, out=scratch).mul_(keep), alpha=abs(w))
            sources.append((delta, keep, w))
        if elect_signs:
            mixed = m.copysign_(s).add_(s)  # twice the agreeing entries' sum
            if normalize:
                sign = scratch.fill_(1.0).copysign_(s)
                divisor = s.zero_()  # (s is spent)
                for (delta, keep, w), raw in zip(sources, weight):
                    agrees = delta.mul_(sign).sign_()  # 1 where sign(w kept) is the elected sign, else 0
                    if keep is not None:
                        agrees.mul_(keep)
                    agreeing = agrees.clamp_(min=0) if w >= 0 else agrees.clamp_(max=0).neg_()
                    divisor.add_(agreeing, alpha=raw)
                nowhere = torch.sign(divisor, out=scratch).abs_().sub_(1)  # -1 where no weight agrees, else 0
                mixed.div_(divisor.sub_(nowhere))  # (there, 1)
        else:
            mixed = s
            if normalize:
                mixed.div_(total_weight if abs(total_weight) >= 1e-8 else 1.0)
        torch.add(base, mixed, alpha=scale * half, out=flat[start:end])
    return result


def _register(name: str, sparsify, elect_signs: bool, normalize: bool, rescale: bool,
              extra: dict[str, float], random: bool = False) -> None:
    def kernel(inputs: MergeInputs, *, generator=None, weight, density=None, normalize=normalize,
               rescale=rescale, **others):
        scale = others.pop("lambda", 1.0)
        return combine(inputs, sparsify, elect_signs, weight, density, normalize, rescale, generator, scale,
                       others)

    kernel.__name__ = name
    kernel.__doc__ = f"mergekit's {name}: task vectors from the base model, combined per tensor."
    options = {"normalize": normalize, "lambda": 1.0, **({"rescale": rescale} if sparsify else {})}
    defaults = {"weight": 1.0, **({"density": 1.0} if sparsify else {}), **extra}
    per_source = ("weight", *(("density",) if sparsify else ()), *extra)
    register_merge_method(name, per_source=per_source, needs_base=True, random=random, defaults=defaults,
                          options=options)(kernel)


_register("task_arithmetic", None, False, normalize=False, rescale=False, extra={})
_register("ties", magnitude, True, normalize=True, rescale=False, extra={})
_register("dare_ties", random_keep, True, normalize=False, rescale=True, extra={}, random=True)
_register("dare_linear", random_keep, False, normalize=False, rescale=True, extra={}, random=True)
_register("breadcrumbs", outliers, False, normalize=False, rescale=False, extra={"gamma": 0.01})
_register("della", magprune, True, normalize=True, rescale=True, extra={"epsilon": 0.15}, random=True)
