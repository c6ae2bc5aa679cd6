"""Task-vector methods (mergekit's generalized task arithmetic): per source, the task vector source - base
is sparsified, weighted, optionally sign-elected (TIES), combined and added back to the base.

    task_arithmetic   no sparsification, plain sum           (normalize off)
    ties              keep the largest |entries|, elect signs (normalize on)
    dare_ties         keep entries at random, elect signs     (rescale on)
    dare_linear       keep entries at random, plain sum       (rescale on)
    breadcrumbs       drop the largest (gamma) and the smallest entries, plain sum
    della             keep with probability rising with |entry| (density +- epsilon), elect signs
                      (normalize and rescale on)

Random draws come from the generator the engine seeds per (run seed, part, tensor, genes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from . import register_merge_method
from .inputs import MergeInputs

Sparsify = Callable[..., "torch.Tensor | None"]  # which entries of a task vector survive: float 0/1, or all


def _draws_below(threshold: torch.Tensor | float, draws: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Float 0/1 in ``out``: 1 where the integer ``draws < threshold``, i.e. ceil(threshold - draw) clipped
    to [0, 1] (float arithmetic: several times faster than a bool mask's conversion)."""
    out.copy_(draws)
    if isinstance(threshold, torch.Tensor):
        return torch.sub(threshold, out, out=out).ceil_().clamp_(0, 1)
    ceiling = torch.tensor(float(math.ceil(threshold)), device=out.device)  # ceil(t - d) = ceil(t) - d
    return torch.sub(ceiling, out, out=out).clamp_(0, 1)


def magnitude(inputs: MergeInputs, i: int, density: float, out: torch.Tensor, **_: object) -> torch.Tensor | None:
    """Keep the ``density`` share of entries with the largest magnitude (at least one)."""
    n = out.numel()
    if density >= 1:
        return None
    if density <= 0 or n == 0:
        return out.zero_()
    return inputs.largest(i, max(1, int(density * n)), out=out)


def uniform_draws(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """One uniform 16-bit draw per entry (int16, -32768..32767), four to a 64-bit random word: a keep
    probability p is ``draws < below(p)``, exact to 1/65536."""
    count = max(1, shape.numel())
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None, generator=generator)
    return words.view(torch.int16)[:count].view(shape)


def below(probability: float | torch.Tensor) -> float | torch.Tensor:
    """The int16 threshold under which a uniform draw of :func:`uniform_draws` falls with ``probability``."""
    return probability * 65536 - 32768


def random_keep(inputs: MergeInputs, i: int, density: float, out: torch.Tensor,
                generator: torch.Generator | None = None, **_: object) -> torch.Tensor | None:
    """DARE: keep each entry with probability ``density`` (one seeded uniform draw per entry)."""
    if density >= 1:
        return None
    return _draws_below(below(density), uniform_draws(out.shape, generator, out.device), out)


def outliers(inputs: MergeInputs, i: int, density: float, out: torch.Tensor, gamma: float = 0.01,
             **_: object) -> torch.Tensor | None:
    """Breadcrumbs: drop the ``gamma`` share of largest entries, then the smallest, to keep ``density``."""
    if density >= 1:
        return None
    n = out.numel()
    keep, top = int(density * n), int(gamma * n)
    top = min(top, n - keep)  # fewer outliers dropped where the density leaves no room for them
    outer = inputs.largest(i, keep + top, out=out)  # the top (gamma) entries are among these: subtract them
    return outer.sub_(inputs.largest(i, top, out=inputs.buffer("largest outliers")))


def magprune(inputs: MergeInputs, i: int, density: float, out: torch.Tensor, epsilon: float = 0.15,
             generator: torch.Generator | None = None, **_: object) -> torch.Tensor | None:
    """DELLA: per row, keep probability from ``density - epsilon`` (smallest |entry|) to ``density + epsilon``
    (largest), drawn from the seeded generator; ``epsilon`` is clipped so both ends stay in (0, 1)."""
    if density >= 1:
        return None
    if density <= 0:
        return out.zero_()
    epsilon = min(epsilon, 0.999 * density, 0.999 * (1 - density))
    rank = inputs.row_rank(i)
    span = max(rank.shape[1] - 1, 1)
    # below(density - epsilon + rank * 2 epsilon / span)
    threshold = inputs.buffer("threshold").view(rank.shape).copy_(rank)
    threshold.mul_(2 * epsilon / span * 65536).add_(below(density - epsilon))
    _draws_below(threshold, uniform_draws(rank.shape, generator, out.device), out.view(rank.shape))
    return out


def combine(inputs: MergeInputs, sparsify: Sparsify | None, elect_signs: bool, weight: Sequence[float],
            density: Sequence[float] | None = None, normalize: bool = False, rescale: bool = False,
            generator: torch.Generator | None = None, scale: float = 1.0,
            per_source: dict[str, Sequence[float]] | None = None) -> torch.Tensor:
    """base + scale * combine(weight_i * sparsify(task vector i)), as mergekit's generalized task arithmetic.

    Sparsifying gives each source a float 0/1 indicator of the entries it keeps; a rescaled source's
    factor (its task vector's L1 norm over the kept entries') joins its weight. TIES sign election needs no
    mask per source: with s = sum of the weighted task vectors and m = the sum of their magnitudes, the
    entries that agree with the sign of s add up to sign(s) (m + |s|) / 2, since the agreeing and the
    disagreeing parts differ by |s| in magnitude and add up to m. The divisor (the weights of the agreeing,
    nonzero entries) needs one comparison per source, and only when normalizing.
    """
    per_source = per_source or {}
    total = inputs.buffer("total").zero_()
    magnitudes = inputs.buffer("magnitudes").zero_() if elect_signs else None
    work = inputs.buffer("work")
    sources = []
    for i in range(len(inputs)):
        delta = inputs.delta(i)
        keep = None if sparsify is None else sparsify(
            inputs, i, density[i], out=inputs.buffer(f"keep {i}"), generator=generator,
            **{key: values[i] for key, values in per_source.items()})
        w = weight[i]
        if keep is None:
            total.add_(delta, alpha=w)
            if elect_signs:
                magnitudes.add_(torch.abs(delta, out=work), alpha=abs(w))
        else:
            if elect_signs or rescale:
                kept_magnitude = torch.abs(delta, out=work).mul_(keep)
            if rescale:
                before, after = inputs.l1(i), float(kept_magnitude.sum())
                w *= before / after if before >= 1e-7 and after >= 1e-7 else 1.0
            total.addcmul_(delta, keep, value=w)
            if elect_signs:
                magnitudes.add_(kept_magnitude, alpha=abs(w))
        sources.append((delta, keep, w))
    result = inputs.output()
    if elect_signs:
        mixed = magnitudes.copysign_(total).add_(total)  # twice the agreeing entries' sum
        half = 0.5
        if normalize:
            sign = work.fill_(1.0).copysign_(total)
            divisor = inputs.buffer("divisor").zero_()
            agrees = inputs.buffer("agrees")
            for (delta, keep, w), raw in zip(sources, weight):
                torch.mul(delta, sign, out=agrees).sign_()  # 1 where sign(w kept) is the elected sign, else 0
                if keep is not None:
                    agrees.mul_(keep)
                agreeing = agrees.clamp_(min=0) if w >= 0 else agrees.clamp_(max=0).neg_()
                divisor.add_(agreeing, alpha=raw)
            mixed.div_(divisor.masked_fill_(divisor == 0, 1.0))
    else:
        mixed, half = total, 1.0
        if normalize:
            total_weight = sum(weight)
            mixed.div_(total_weight if abs(total_weight) >= 1e-8 else 1.0)
    return torch.add(inputs.base(), mixed, alpha=scale * half, out=result)


def _register(name: str, sparsify: Sparsify | None, elect_signs: bool, normalize: bool, rescale: bool,
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
