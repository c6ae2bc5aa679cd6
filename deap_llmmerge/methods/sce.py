"""``sce`` (Select, Calculate, Erase; FuseLLM's SCE, as mergekit 0.1.5 builds it): keep the entries where the
sources' task vectors vary most (``select_topk``, a share), weight each task vector by its mean square,
erase the entries whose sign disagrees with the weighted majority, and add their weighted mean to the base."""

from __future__ import annotations

import torch

from .base import MergeMethod
from .inputs import MergeInputs


def _selected(vectors: torch.Tensor, share: float) -> torch.Tensor:
    """1 where the task vectors' variance across sources is among the largest ``share`` of its nonzero
    entries, else 0."""
    if share >= 1 or vectors.numel() == 0:
        return torch.ones_like(vectors[0])
    variance = torch.var(vectors, dim=0, unbiased=False)
    k = int(torch.count_nonzero(variance) * share)
    mask = torch.zeros_like(variance)
    if k > 0:
        mask.view(-1)[torch.topk(variance.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


def sce(inputs: MergeInputs, select_topk: float, generator=None) -> torch.Tensor:
    """The base plus the sign-consistent, mean-square-weighted mean of the selected task vector entries."""
    base = inputs.base()
    vectors = torch.stack([inputs.delta(i) for i in range(len(inputs))])
    if select_topk < 1:
        vectors = vectors * _selected(vectors, select_topk).unsqueeze(0)
    majority = (vectors.sum(dim=0) >= 0).to(vectors.dtype) * 2 - 1
    agree = (vectors.sign() == majority).to(vectors.dtype)
    weights = vectors.square().reshape(len(inputs), -1).mean(dim=1)
    total = float(weights.sum())
    weights = torch.ones_like(weights) / len(inputs) if abs(total) < 1e-6 else weights / total
    kept = weights.view(-1, *[1] * (vectors.dim() - 1)) * agree
    return base + (vectors * kept).sum(dim=0) / kept.sum(dim=0).clamp(min=1e-6)


METHODS = (MergeMethod("sce", sce, per_part=("select_topk",), needs_base=True, defaults={"select_topk": 1.0},
                       takes_one_source=False),)
