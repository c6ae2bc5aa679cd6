"""Task-vector methods (mergekit's generalized task arithmetic): per source, the task vector source - base
is sparsified, weighted, optionally sign-elected (TIES), combined and added back to the base.

    task_arithmetic   no sparsification, plain sum           (normalize off)
    ties              keep the largest |entries|, elect signs (normalize on)
    dare_ties         keep entries at random, elect signs     (rescale on)
    dare_linear       keep entries at random, plain sum       (rescale on)
    breadcrumbs       drop the largest (gamma) and the smallest entries, plain sum
    della             keep with probability rising with |entry| (density +- epsilon), elect signs
                      (normalize and rescale on)

A sparsifier (:mod:`.sparsify`) decides, for the whole tensor, which entries of a task vector survive and
writes that decision block by block as float 0/1; :func:`combine` walks the blocks (see :mod:`.inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import MergeMethod
from .inputs import MergeInputs
from .sparsify import Keep, magnitude, magprune, outliers, random_keep

__all__ = ["combine", "METHODS"]


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


def _method(name: str, sparsify, elect_signs: bool, normalize: bool, rescale: bool,
            extra: dict[str, float], random: bool = False) -> MergeMethod:
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
    return MergeMethod(name, kernel, per_source=per_source, needs_base=True, random=random, defaults=defaults,
                       options=options)


METHODS = (
    _method("task_arithmetic", None, False, normalize=False, rescale=False, extra={}),
    _method("ties", magnitude, True, normalize=True, rescale=False, extra={}),
    _method("dare_ties", random_keep, True, normalize=False, rescale=True, extra={}, random=True),
    _method("dare_linear", random_keep, False, normalize=False, rescale=True, extra={}, random=True),
    _method("breadcrumbs", outliers, False, normalize=False, rescale=False, extra={"gamma": 0.01}),
    _method("della", magprune, True, normalize=True, rescale=True, extra={"epsilon": 0.15}, random=True),
)
