"""Methods that interpolate the sources themselves: ``take``, ``linear``, ``slerp``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidGenomeError
from .base import MergeMethod
from .inputs import MergeInputs


def take(inputs: MergeInputs, generator=None) -> torch.Tensor:
    """The one source's tensor, unchanged."""
    return inputs.tensors[0]


def linear(inputs: MergeInputs, weight: Sequence[float], normalize: bool = True, generator=None) -> torch.Tensor:
    """sum(weight_i * tensor_i), divided by sum(weight) when ``normalize``."""
    merged = inputs.source(0) * weight[0]
    for i in range(1, len(inputs)):
        merged.add_(inputs.source(i), alpha=weight[i])
    if normalize:
        total = sum(weight)
        if abs(total) < 1e-8:
            raise InvalidGenomeError(f"linear weights {list(weight)} sum to 0")
        merged.div_(total)
    return merged


def slerp(inputs: MergeInputs, t: float, dot_threshold: float = 0.9995, eps: float = 1e-8,
          generator=None) -> torch.Tensor:
    """Spherical interpolation from the first tensor (t=0) to the second (t=1) over the flattened tensor;
    nearly collinear pairs (|cos| > 0.9995) are interpolated linearly, as mergekit does."""
    a, b = inputs.source(0), inputs.source(1)
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    norm_a = norm_a if norm_a > eps else torch.ones_like(norm_a)
    norm_b = norm_b if norm_b > eps else torch.ones_like(norm_b)
    dot = (torch.dot(a.reshape(-1), b.reshape(-1)) / (norm_a * norm_b)).clamp(-1, 1)
    if dot.abs() > dot_threshold:
        return (1 - t) * a + t * b
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    merged = a * (torch.sin((1 - t) * theta) / sin_theta)
    return merged.add_(b * (torch.sin(t * theta) / sin_theta))


METHODS = (
    MergeMethod("take", take, max_sources=1),
    MergeMethod("linear", linear, per_source=("weight",), defaults={"weight": 1.0}, options={"normalize": True}),
    MergeMethod("slerp", slerp, per_part=("t",), min_sources=2, max_sources=2, defaults={"t": 0.5}),
)
