"""Methods that interpolate on a sphere, or per entry, as mergekit 0.1.5 builds them: ``nuslerp`` (slerp of
two sources by their weights), ``multislerp`` (barycentric slerp of any number), ``karcher`` (the Karcher
mean of every source, unweighted) and ``nearswap`` (the base, moved towards the source where they are
already close). Each kernel follows mergekit's code for the same method, so that ``mergekit.yaml`` builds
the same tensors (the interop test checks it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidGenomeError
from .base import MergeMethod
from .inputs import MergeInputs


def nuslerp(inputs: MergeInputs, weight: Sequence[float], eps: float = 1e-8, generator=None) -> torch.Tensor:
    """Slerp from the first source to the second at t = weight_1 / (weight_0 + weight_1) (0.5 when they sum
    to about 0), over the flattened tensors; nearly collinear pairs interpolate linearly."""
    total = sum(weight)
    t = 0.5 if abs(total) < 1e-6 else weight[1] / total
    v0, v1 = inputs.source(0).reshape(-1), inputs.source(1).reshape(-1)
    cos = torch.sum(v0 / torch.norm(v0).clamp(min=1e-7) * (v1 / torch.norm(v1).clamp(min=1e-7))).clamp(-1, 1)
    if 1 - cos.square() <= eps ** 2:
        merged = (1 - t) * v0 + t * v1
    else:
        theta = torch.acos(cos)
        merged = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    return merged.reshape(inputs.shape)


def multislerp(inputs: MergeInputs, weight: Sequence[float], normalize_weights: bool = True, eps: float = 1e-8,
               generator=None) -> torch.Tensor:
    """Barycentric interpolation on the sphere: the sources' unit vectors projected to the tangent space at
    their weighted mean direction, averaged there, mapped back, and scaled by the weighted mean norm."""
    if len(inputs) == 1 or inputs.numel == 0:
        return inputs.source(0).clone()
    flat = torch.stack([inputs.source(i).reshape(-1) for i in range(len(inputs))])
    weights = torch.tensor(list(weight), dtype=flat.dtype, device=flat.device)
    if normalize_weights:
        weights = weights / weights.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * weights.view(-1, 1)).sum(0)
    if torch.norm(mean) < eps:
        if len(inputs) == 2:
            return (flat[0] * weights[0] + flat[1] * weights[1]).reshape(inputs.shape)
        raise InvalidGenomeError(f"multislerp: the weighted directions {list(weight)} cancel out")
    mean = mean / torch.norm(mean)
    tangent = ((units - (units * mean).sum(-1, keepdim=True) * mean) * weights.view(-1, 1)).sum(0)
    length = torch.norm(tangent) + eps
    merged = mean * torch.cos(length) + tangent * (torch.sin(length) / length)
    return (merged * (norms.squeeze(-1) * weights).sum()).reshape(inputs.shape)


def karcher(inputs: MergeInputs, max_iter: int = 10, tol: float = 1e-5, generator=None) -> torch.Tensor:
    """The Karcher (Riemannian) mean of the sources' directions on the unit sphere, equal weights, found by
    at most ``max_iter`` gradient steps, scaled by the sources' mean norm."""
    tensors = [inputs.source(i) for i in range(len(inputs))]
    if len(tensors) == 1:
        return tensors[0]
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [torch.zeros_like(t) if float(n) == 0.0 else t / n for t, n in zip(tensors, norms)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    shares = [alphas[i] / sum(alphas[j] for j in valid) for i in valid]
    points = [units[i] for i in valid]
    mean = sum(share * unit for share, unit in zip(shares, points))
    length = torch.linalg.vector_norm(mean)
    mean = points[0].clone() if float(length) < tol else mean / length
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for share, unit in zip(shares, points):
            dot = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += share * (theta / torch.sin(theta)) * (unit - dot * mean)
        step = torch.linalg.vector_norm(tangent)
        if float(step) < tol:
            break
        mean = torch.cos(step) * mean + torch.sin(step) * (tangent / step)
        size = torch.linalg.vector_norm(mean)
        if float(size) > tol:
            mean = mean / size
    return sum(alpha * norm for alpha, norm in zip(alphas, norms)) * mean


def nearswap(inputs: MergeInputs, t: float, generator=None) -> torch.Tensor:
    """Per entry, the base moved towards the source by min(1, t / |base - source|): entries where the two
    are within ``t`` take the source, the others stay nearer the base."""
    base, source = inputs.base(), inputs.source(0)
    weight = (t / torch.abs(base - source).clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * source + (1 - weight) * base


METHODS = (
    MergeMethod("nuslerp", nuslerp, per_source=("weight",), min_sources=2, max_sources=2, defaults={"weight": 1.0}),
    MergeMethod("multislerp", multislerp, per_source=("weight",), defaults={"weight": 1.0},
                options={"normalize_weights": True}),
    MergeMethod("karcher", karcher, min_sources=2, options={"max_iter": 10, "tol": 1e-5}, takes_one_source=False),
    MergeMethod("nearswap", nearswap, per_part=("t",), needs_base=True, max_sources=1, defaults={"t": 0.001}),
)
