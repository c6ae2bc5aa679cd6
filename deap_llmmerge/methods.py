"""The merge methods: one registered kernel each, with mergekit's parameter meanings.

A kernel receives one tensor per source (the same parameter of the same part), the base model's tensor
for task-vector methods, the part's parameters and a seeded generator for random methods. It accumulates
in float32 and returns a float32 tensor; the engine writes it in the skeleton's dtype.

Per source, ``weight`` scales a source (``linear``) or its task vector (source - base); ``density`` is the
share of a task vector's entries that survive sparsification; ``gamma`` (breadcrumbs) the share of the
largest entries removed as outliers; ``epsilon`` (della) the spread of keep probabilities around
``density``. Per part, ``t`` is the slerp position from the first source (0) to the second (1). Options
fixed for a whole run: ``normalize`` (divide by the sum of weights), ``rescale`` (restore the L1 norm of a
sparsified task vector) and ``lambda`` (scale of the merged task vector), with mergekit's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .errors import InvalidGenomeError

__all__ = ["MergeMethod", "MERGE_METHODS", "register_merge_method", "get_method"]

Kernel = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A kernel and what it needs: genes per source and per part, a base model, defaults and options."""

    name: str
    kernel: Kernel
    per_source: tuple[str, ...] = ()
    per_part: tuple[str, ...] = ()
    needs_base: bool = False
    random: bool = False
    min_sources: int = 1
    max_sources: int | None = None
    defaults: dict[str, float] = field(default_factory=dict)
    options: dict[str, object] = field(default_factory=dict)

    def check(self, part: str, step) -> None:
        """Raise InvalidGenomeError when ``step`` does not fit this method."""
        count = len(step.sources)
        if count < self.min_sources or (self.max_sources is not None and count > self.max_sources):
            raise InvalidGenomeError(f"part {part}: {self.name} cannot merge {count} source(s)")
        if self.needs_base and step.base is None:
            raise InvalidGenomeError(f"part {part}: {self.name} needs a base model")
        params = step.kwargs
        for name in self.per_source:
            if len(params.get(name, ())) != count:
                raise InvalidGenomeError(f"part {part}: {self.name} needs one {name} per source")
        for name in self.per_part:
            if len(params.get(name, ())) != 1:
                raise InvalidGenomeError(f"part {part}: {self.name} needs one {name}")
        for name, values in params.items():
            if not all(math.isfinite(v) for v in values):
                raise InvalidGenomeError(f"part {part}: {name} {list(values)} is not finite")
        for name in ("density", "t"):
            if any(not 0.0 <= v <= 1.0 for v in params.get(name, ())):
                raise InvalidGenomeError(f"part {part}: {name} {list(params[name])} outside [0, 1]")

    def merge(self, tensors: Sequence[torch.Tensor], base: torch.Tensor | None, params: dict,
              generator: torch.Generator | None, options: dict | None = None) -> torch.Tensor:
        settings = {**self.options, **(options or {})}
        values = {key: (value if key in self.per_source else value[0]) for key, value in params.items()
                  if key != "seed"}
        if self.needs_base:
            return self.kernel(tensors, base, generator=generator, **values, **settings)
        return self.kernel(tensors, **values, **settings)


MERGE_METHODS: dict[str, MergeMethod] = {}


def register_merge_method(name: str, **spec) -> Callable[[Kernel], Kernel]:
    """Register ``kernel`` as the merge method ``name`` (see :class:`MergeMethod` for ``spec``)."""

    def register(kernel: Kernel) -> Kernel:
        MERGE_METHODS[name] = MergeMethod(name, kernel, **spec)
        return kernel

    return register


def get_method(name: str) -> MergeMethod:
    if name not in MERGE_METHODS:
        raise InvalidGenomeError(f"unknown merge method {name!r}; known: {', '.join(MERGE_METHODS)}")
    return MERGE_METHODS[name]


# --- plain kernels ---------------------------------------------------------------------------------------

@register_merge_method("take", max_sources=1)
def take(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The one source's tensor, unchanged."""
    return tensors[0]


@register_merge_method("linear", per_source=("weight",), defaults={"weight": 1.0}, options={"normalize": True})
def linear(tensors: Sequence[torch.Tensor], weight: Sequence[float], normalize: bool = True) -> torch.Tensor:
    """sum(weight_i * tensor_i), divided by sum(weight) when ``normalize``."""
    merged = tensors[0].float() * weight[0]
    for tensor, w in zip(tensors[1:], weight[1:]):
        merged.add_(tensor.float(), alpha=w)
    if normalize:
        total = sum(weight)
        if abs(total) < 1e-8:
            raise InvalidGenomeError(f"linear weights {list(weight)} sum to 0")
        merged.div_(total)
    return merged


@register_merge_method("slerp", per_part=("t",), min_sources=2, max_sources=2, defaults={"t": 0.5})
def slerp(tensors: Sequence[torch.Tensor], t: float, dot_threshold: float = 0.9995, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation from the first tensor (t=0) to the second (t=1) over the flattened tensor;
    nearly collinear pairs (|cos| > 0.9995) are interpolated linearly, as mergekit does."""
    a, b = tensors[0].float(), tensors[1].float()
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    norm_a = norm_a if norm_a > eps else torch.ones_like(norm_a)
    norm_b = norm_b if norm_b > eps else torch.ones_like(norm_b)
    dot = ((a / norm_a) * (b / norm_b)).sum().clamp(-1, 1)
    if dot.abs() > dot_threshold:
        return (1 - t) * a + t * b
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    return (torch.sin((1 - t) * theta) / sin_theta) * a + (torch.sin(t * theta) / sin_theta) * b


# --- task vectors: sparsify, weight, (elect signs), combine ------------------------------------------------

def _rescaled(delta: torch.Tensor, mask: torch.Tensor, rescale: bool, eps: float = 1e-7) -> torch.Tensor:
    kept = delta * mask
    if not rescale:
        return kept
    before, after = delta.abs().sum(), kept.abs().sum()
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def _magnitude(delta: torch.Tensor, density: float, rescale: bool = False, **_: object) -> torch.Tensor:
    """Keep the ``density`` share of entries with the largest magnitude (at least one)."""
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    mask = torch.zeros(delta.numel(), dtype=delta.dtype, device=delta.device)
    mask[torch.topk(delta.abs().reshape(-1), k, sorted=False).indices] = 1
    return _rescaled(delta, mask.view_as(delta), rescale)


def _random(delta: torch.Tensor, density: float, rescale: bool = True, generator=None, **_: object) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` (a seeded Bernoulli draw)."""
    if density >= 1:
        return delta
    mask = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    return _rescaled(delta, mask, rescale)


def _outliers(delta: torch.Tensor, density: float, gamma: float = 0.01, rescale: bool = False,
              **_: object) -> torch.Tensor:
    """Breadcrumbs: drop the ``gamma`` share of largest entries, then the smallest, to keep ``density``."""
    if density >= 1:
        return delta
    n = delta.numel()
    keep, top = int(density * n), int(gamma * n)
    bottom = max(0, n - keep - top)
    order = torch.argsort(delta.abs().reshape(-1))
    mask = torch.zeros(n, dtype=delta.dtype, device=delta.device)
    mask[order[bottom:bottom + keep]] = 1
    return _rescaled(delta, mask.view_as(delta), rescale)


def _magprune(delta: torch.Tensor, density: float, epsilon: float = 0.15, rescale: bool = True, generator=None,
              **_: object) -> torch.Tensor:
    """DELLA: per row, keep probability from ``density - epsilon`` (smallest) to ``density + epsilon``
    (largest magnitude), drawn from the seeded generator. ``epsilon`` is clipped so both ends stay in (0, 1)."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    epsilon = min(epsilon, 0.999 * density, 0.999 * (1 - density))
    rows = delta if delta.dim() >= 2 else delta.unsqueeze(0)
    rows = rows.reshape(rows.shape[0], -1)
    order = torch.argsort(rows.abs(), dim=1)
    ranks = torch.empty_like(rows)
    ranks.scatter_(1, order, torch.arange(rows.shape[1], dtype=rows.dtype, device=rows.device).expand_as(rows))
    span = max(rows.shape[1] - 1, 1)
    probabilities = (density - epsilon) + (ranks / span) * 2 * epsilon
    mask = torch.bernoulli(probabilities, generator=generator).view_as(delta)
    return _rescaled(delta, mask, rescale)


def _task_arithmetic(tensors: Sequence[torch.Tensor], base: torch.Tensor, *, weight: Sequence[float],
                     density: Sequence[float] | None = None, sparsify: Callable | None = None,
                     elect_signs: bool = False, normalize: bool = False, rescale: bool = False,
                     generator: torch.Generator | None = None, **extra) -> torch.Tensor:
    """base + lambda * combine(weight_i * sparsify(source_i - base)), as mergekit's generalized task arithmetic."""
    scale = extra.pop("lambda", 1.0)
    base = base.float()
    per_source = {key: value for key, value in extra.items() if isinstance(value, (tuple, list))}
    deltas = []
    for i, tensor in enumerate(tensors):
        delta = tensor.float() - base
        if sparsify is not None:
            delta = sparsify(delta, density[i], rescale=rescale, generator=generator,
                             **{key: value[i] for key, value in per_source.items()})
        deltas.append(delta * weight[i])
    stacked = torch.stack(deltas)
    weights = torch.tensor(weight, dtype=stacked.dtype, device=stacked.device).view(-1, *[1] * base.dim())
    if elect_signs:
        majority = torch.where(stacked.sum(dim=0) >= 0, 1.0, -1.0)
        mask = (stacked.sign() == majority).to(stacked.dtype)
        mixed = (stacked * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = stacked.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    if scale != 1:
        mixed = mixed * scale
    return base + mixed


def _register_task_vector_method(name: str, sparsify: Callable | None, elect_signs: bool, normalize: bool,
                                 rescale: bool, extra: dict[str, float], random: bool = False) -> None:
    per_source = ("weight", *(("density",) if sparsify else ()), *extra)

    def kernel(tensors, base, generator=None, **params):
        return _task_arithmetic(tensors, base, sparsify=sparsify, elect_signs=elect_signs, generator=generator,
                                **params)

    kernel.__name__ = name
    kernel.__doc__ = f"mergekit's {name}: task vectors from the base model, combined per tensor."
    options = {"normalize": normalize, "lambda": 1.0, **({"rescale": rescale} if sparsify else {})}
    defaults = {"weight": 1.0, **({"density": 1.0} if sparsify else {}), **extra}
    register_merge_method(name, per_source=per_source, needs_base=True, random=random, defaults=defaults,
                          options=options)(kernel)


_register_task_vector_method("task_arithmetic", None, False, normalize=False, rescale=False, extra={})
_register_task_vector_method("ties", _magnitude, True, normalize=True, rescale=False, extra={})
_register_task_vector_method("dare_ties", _random, True, normalize=False, rescale=True, extra={}, random=True)
_register_task_vector_method("dare_linear", _random, False, normalize=False, rescale=True, extra={}, random=True)
_register_task_vector_method("breadcrumbs", _outliers, False, normalize=False, rescale=False, extra={"gamma": 0.01})
_register_task_vector_method("della", _magprune, True, normalize=True, rescale=True, extra={"epsilon": 0.15},
                             random=True)


@register_merge_method("model_stock", needs_base=True, min_sources=2)
def model_stock(tensors: Sequence[torch.Tensor], base: torch.Tensor, generator=None) -> torch.Tensor:
    """Model Stock: interpolate between the base and the sources' average by the mean cosine of their task
    vectors, t = n cos / (1 + (n - 1) cos) (the base where that is singular)."""
    w0 = base.float().reshape(-1)
    offsets = [t.float().reshape(-1) - w0 for t in tensors]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1:]:
            norms = (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)).clamp(min=1e-6)
            cosines.append(((a * b).sum() / norms).clamp(-1, 1))
    cos = torch.stack(cosines).mean()
    n = len(tensors)
    denominator = 1 + (n - 1) * cos
    t = torch.zeros_like(cos) if denominator.abs() < 1e-6 else n * cos / denominator
    average = sum(t_.float() for t_ in tensors) / n
    return (t * average.reshape(-1) + (1 - t) * w0).reshape(base.shape)
