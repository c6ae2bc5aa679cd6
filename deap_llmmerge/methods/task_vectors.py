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

from collections.abc import Callable, Sequence

import torch

from . import register_merge_method
from .inputs import MergeInputs

Sparsify = Callable[..., torch.Tensor]


def _rescaled(delta: torch.Tensor, kept: torch.Tensor, rescale: bool, eps: float = 1e-7) -> torch.Tensor:
    """``kept`` (a new tensor), scaled to the L1 norm of ``delta`` when ``rescale``."""
    if not rescale:
        return kept
    before, after = delta.abs().sum(), kept.abs().sum()
    if before < eps or after < eps:
        return kept
    return kept.mul_(before / after)


def magnitude(inputs: MergeInputs, i: int, density: float, rescale: bool = False, **_: object) -> torch.Tensor:
    """Keep the ``density`` share of entries with the largest magnitude (at least one)."""
    delta = inputs.delta(i)
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    kept = delta * inputs.largest(i, k)
    return _rescaled(delta, kept, rescale)


def uniform_draws(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """One uniform 16-bit draw per entry (int16, -32768..32767), four to a 64-bit random word: a keep
    probability p is ``draws < below(p)``, exact to 1/65536."""
    count = max(1, shape.numel())
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, None, generator=generator)
    return words.view(torch.int16)[:count].view(shape)


def below(probability: float | torch.Tensor) -> float | torch.Tensor:
    """The int16 threshold under which a uniform draw of :func:`uniform_draws` falls with ``probability``."""
    return probability * 65536 - 32768


def random_keep(inputs: MergeInputs, i: int, density: float, rescale: bool = True,
                generator: torch.Generator | None = None, **_: object) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` (one seeded uniform draw per entry)."""
    delta = inputs.delta(i)
    if density >= 1:
        return delta
    keep = uniform_draws(delta.shape, generator, delta.device) < below(density)
    return _rescaled(delta, delta * keep, rescale)


def outliers(inputs: MergeInputs, i: int, density: float, gamma: float = 0.01, rescale: bool = False,
             **_: object) -> torch.Tensor:
    """Breadcrumbs: drop the ``gamma`` share of largest entries, then the smallest, to keep ``density``."""
    delta = inputs.delta(i)
    if density >= 1:
        return delta
    n = delta.numel()
    keep, top = int(density * n), int(gamma * n)
    top = min(top, n - keep)  # fewer outliers dropped where the density leaves no room for them
    mask = inputs.largest(i, keep + top) & ~inputs.largest(i, top)
    return _rescaled(delta, delta * mask, rescale)


def magprune(inputs: MergeInputs, i: int, density: float, epsilon: float = 0.15, rescale: bool = True,
             generator: torch.Generator | None = None, **_: object) -> torch.Tensor:
    """DELLA: per row, keep probability from ``density - epsilon`` (smallest |entry|) to ``density + epsilon``
    (largest), drawn from the seeded generator; ``epsilon`` is clipped so both ends stay in (0, 1)."""
    delta = inputs.delta(i)
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    epsilon = min(epsilon, 0.999 * density, 0.999 * (1 - density))
    rank = inputs.row_rank(i)
    span = max(rank.shape[1] - 1, 1)
    probability = rank.to(torch.float32).mul_(2 * epsilon / span).add_(density - epsilon)
    keep = uniform_draws(rank.shape, generator, delta.device) < below(probability)
    return _rescaled(delta, delta * keep.view_as(delta), rescale)


def combine(inputs: MergeInputs, sparsify: Sparsify | None, elect_signs: bool, weight: Sequence[float],
            density: Sequence[float] | None = None, normalize: bool = False, rescale: bool = False,
            generator: torch.Generator | None = None, scale: float = 1.0,
            per_source: dict[str, Sequence[float]] | None = None) -> torch.Tensor:
    """base + scale * combine(weight_i * sparsify(task vector i)), as mergekit's generalized task arithmetic."""
    per_source = per_source or {}
    weighted = []
    for i in range(len(inputs)):
        delta = inputs.delta(i) if sparsify is None else \
            sparsify(inputs, i, density[i], rescale=rescale, generator=generator,
                     **{key: values[i] for key, values in per_source.items()})
        weighted.append(delta * weight[i])
    if elect_signs:
        positive = sum(weighted[1:], weighted[0].clone()) >= 0
        mixed = torch.zeros_like(weighted[0])
        divisor = torch.zeros_like(weighted[0])
        for delta, w in zip(weighted, weight):
            keep = torch.where(positive, delta > 0, delta < 0)
            mixed.add_(torch.where(keep, delta, 0.0))
            divisor.add_(keep, alpha=w)
        divisor[divisor == 0] = 1
    else:
        mixed = sum(weighted[1:], weighted[0].clone())
        total = sum(weight)
        divisor = total if abs(total) >= 1e-8 else 1.0
    if normalize:
        mixed = mixed.div_(divisor)
    if scale != 1:
        mixed = mixed.mul_(scale)
    return mixed.add_(inputs.base())


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
