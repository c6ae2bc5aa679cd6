"""Fitness metrics (Hugging Face causal-LM convention: the prediction at t is scored against ``labels[t+1]``).

Every benchmark kind is measured from three per-row statistics of the scored positions, summed exactly
(float64) over the whole set: ``nll`` (summed cross-entropy), ``tokens`` (scored positions) and ``right``
(positions whose argmax is the label), gathered per item and averaged (:mod:`.items`). From them:

- ``tensors`` and ``completion``: loss = sum(nll) / sum(tokens); accuracy = share of rows right at every
  scored position (for a completion: the whole answer is the greedy continuation);
- ``text``: loss as above; accuracy = sum(right) / sum(tokens) (next-token top-1);
- ``multiple_choice``: accuracy = share of items whose correct choice has the highest log-likelihood per
  unit of ``norm_length`` (lm-evaluation-harness ``acc_norm``, per character by default); loss =
  sum(nll) / sum(tokens) over the correct choices' tokens; ``choice_loss`` = the mean over items of
  -log softmax(the choices' normalised log-likelihoods)[correct], a smooth stand-in for ``acc_norm``
  (it moves with every item's margin, where accuracy moves only when an item flips).

The original design's ``calculate_accuracy`` / ``calculate_loss`` keep their form,
``fn(logits, labels) -> (total, count)`` per batch, value ``sum(total) / sum(count)``; users may pass their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .benchmarks import IGNORE_INDEX, Batch, BenchmarkData
from .items import ItemScores, item_scores, item_table, weighted_metrics

__all__ = ["Metric", "calculate_accuracy", "calculate_loss", "score", "kind_metrics", "KIND_METRIC_NAMES",
           "METRIC_DIRECTIONS", "RowStatistics", "row_statistics", "benchmark_metrics", "benchmark_items",
           "model_inputs", "eval_mode"]

Metric = Callable[[torch.Tensor, torch.Tensor], tuple]

# Every metric an objective may name: +1 larger is better, -1 smaller is better.
METRIC_DIRECTIONS = {"accuracy": 1.0, "loss": -1.0, "perplexity": -1.0, "choice_loss": -1.0}


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


class RowStatistics:
    """Per-row ``nll`` (float64), ``tokens`` and ``right`` over the scored positions, for all N rows."""

    def __init__(self, n_rows: int) -> None:
        self.nll = torch.zeros(n_rows, dtype=torch.float64)
        self.tokens = torch.zeros(n_rows, dtype=torch.long)
        self.right = torch.zeros(n_rows, dtype=torch.long)

    def add(self, rows: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        nll, tokens, right = (s.cpu() for s in stats)
        self.nll[rows] += nll
        self.tokens[rows] += tokens
        self.right[rows] += right


def row_statistics(scored_logits: torch.Tensor, labels: torch.Tensor, scored_rows: torch.Tensor | None = None,
                   n_rows: int | None = None) -> tuple[torch.Tensor, ...]:
    """Per-row (nll, tokens, right) of one batch from the logits at its scored positions only.

    ``scored_logits`` is ``[M, V]``: the logits at every position t with ``labels[:, t+1] != -100``, in
    row-major order. In a packed batch, ``scored_rows`` names the row each of them belongs to (of ``n_rows``).
    """
    scored = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][scored]
    row_of = scored.nonzero()[:, 0] if scored_rows is None else scored_rows
    n_rows = labels.shape[0] if n_rows is None else n_rows
    losses = F.cross_entropy(scored_logits.float(), targets, reduction="none").double()
    right = (scored_logits.argmax(dim=-1) == targets).long()
    nll = torch.zeros(n_rows, dtype=torch.float64, device=labels.device).index_add_(0, row_of, losses)
    hits = torch.zeros(n_rows, dtype=torch.long, device=labels.device).index_add_(0, row_of, right)
    tokens = scored.sum(dim=1) if scored_rows is None else torch.bincount(row_of, minlength=n_rows)
    return nll, tokens, hits


def kind_metrics(stats: RowStatistics, data: BenchmarkData) -> dict[str, float]:
    """The kind's metrics of the whole benchmark (see :mod:`.items`)."""
    return weighted_metrics(item_table(stats.nll, stats.tokens, stats.right, data), data.kind)


# What each kind's metrics function returns (objectives are checked against it before a run starts).
KIND_METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "tensors": ("accuracy", "loss"),
    "completion": ("accuracy", "loss"),
    "text": ("accuracy", "loss", "perplexity"),
    "multiple_choice": ("accuracy", "loss", "choice_loss"),
}


def model_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """Keyword arguments for the model: ids, and with padding the mask and the position ids it implies."""
    inputs = {"input_ids": batch.input_ids, "use_cache": False}
    if batch.attention_mask is not None:
        inputs["attention_mask"] = batch.attention_mask
        inputs["position_ids"] = batch.position_ids
    return inputs


class eval_mode:
    """Context: ``model.eval()`` inside, the caller's training flag restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        return self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.training)


@torch.inference_mode()
def benchmark_items(model: nn.Module, data: BenchmarkData, batch_size: int) -> tuple[dict[str, float], ItemScores]:
    """The plain path: full logits at every position, then the kind's metrics (the reference the fast
    population scorer must equal) and what the model did on each item."""
    device = next(model.parameters()).device
    stats = RowStatistics(len(data))
    with eval_mode(model):
        for batch in data.batches(batch_size, device):
            logits = model(**model_inputs(batch)).logits
            scored = logits[:, :-1][batch.labels[:, 1:] != IGNORE_INDEX]
            stats.add(batch.rows, row_statistics(scored, batch.labels))
    table = item_table(stats.nll, stats.tokens, stats.right, data)
    return weighted_metrics(table, data.kind), item_scores(table, data.kind)


def benchmark_metrics(model: nn.Module, data: BenchmarkData, batch_size: int) -> dict[str, float]:
    """The plain path's metrics of ``model`` on ``data`` (see :func:`benchmark_items`)."""
    return benchmark_items(model, data, batch_size)[0]


@torch.inference_mode()
def score(model: nn.Module, data: BenchmarkData, metrics: Sequence[Metric], batch_size: int) -> tuple[float, ...]:
    """Run ``model`` over ``data`` once (batched, on the model's device) and return every ``metric``."""
    device = next(model.parameters()).device
    totals = [0] * len(metrics)
    counts = [0] * len(metrics)
    with eval_mode(model):
        for batch in data.batches(batch_size, device):
            logits = model(**model_inputs(batch)).logits
            for i, metric in enumerate(metrics):
                total, count = metric(logits, batch.labels)
                totals[i] = totals[i] + total
                counts[i] = counts[i] + count
    return tuple(float(total) / float(count) for total, count in zip(totals, counts))
