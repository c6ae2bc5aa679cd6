"""``model_stock``: the base and the sources' average, interpolated by the sources' geometry."""

from __future__ import annotations

import torch

from .base import MergeMethod
from .inputs import MergeInputs


def model_stock(inputs: MergeInputs, generator=None) -> torch.Tensor:
    """Model Stock: interpolate between the base and the sources' average by the mean cosine of their task
    vectors, t = n cos / (1 + (n - 1) cos) (the base where that is singular)."""
    offsets = [inputs.delta(i).reshape(-1) for i in range(len(inputs))]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1:]:
            norms = (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)).clamp(min=1e-6)
            cosines.append((torch.dot(a, b) / norms).clamp(-1, 1))
    cos = torch.stack(cosines).mean()
    n = len(inputs)
    denominator = 1 + (n - 1) * cos
    t = torch.zeros_like(cos) if denominator.abs() < 1e-6 else n * cos / denominator
    average = sum(inputs.source(i) for i in range(n)) / n
    base = inputs.base()
    return t * average + (1 - t) * base


METHODS = (MergeMethod("model_stock", model_stock, needs_base=True, min_sources=2, takes_one_source=False),)
