"""Fitness metrics on benchmark tensors (Hugging Face causal-LM convention: labels shifted inside).

A metric is ``fn(logits, labels) -> (total, count)`` on one batch; its value on the whole set is
``sum(total) / sum(count)``. That keeps the definitions exact under any batch size:

- ``calculate_loss``: summed cross-entropy over labeled positions / number of labeled positions;
- ``calculate_accuracy``: sequences whose argmax is right at every labeled position / sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import IGNORE_INDEX, BenchmarkData

__all__ = ["Metric", "calculate_accuracy", "calculate_loss", "score"]

Metric = Callable[[torch.Tensor, torch.Tensor], tuple]


def _shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return logits[:, :-1, :], labels[:, 1:]


def calculate_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token cross-entropies, number of labeled tokens), in float32."""
    logits, labels = _shift(logits, labels)
    mask = labels != IGNORE_INDEX
    total = F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
    return total, mask.sum()


def calculate_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sequences predicted right at every labeled position, sequences)."""
    logits, labels = _shift(logits, labels)
    wrong = (logits.argmax(dim=-1) != labels) & (labels != IGNORE_INDEX)
    return (~wrong.any(dim=1)).sum(), labels.shape[0]


@torch.inference_mode()
def score(model: nn.Module, data: BenchmarkData, metrics: Sequence[Metric], batch_size: int) -> tuple[float, ...]:
    """Run ``model`` over ``data`` once (batched, on the model's device) and return every metric."""
    device = next(model.parameters()).device
    totals = [0] * len(metrics)
    counts = [0] * len(metrics)
    for input_ids, labels, mask in data.batches(batch_size, device):
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        for i, metric in enumerate(metrics):
            total, count = metric(logits, labels)
            totals[i] = totals[i] + total
            counts[i] = counts[i] + count
    return tuple(float(total) / float(count) for total, count in zip(totals, counts))
