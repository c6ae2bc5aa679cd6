"""What a candidate did on each benchmark item, and the metrics as (weighted) means over items.

An item is a row of a ``tensors`` or ``completion`` benchmark, a window of a ``text`` one, or a
multiple-choice item (its choices' rows together). Per item: the scored tokens' summed ``nll`` and count
(``tokens``), ``right`` tokens, whether the item is ``correct``, and for multiple choice its ``choice_nll``
(-log softmax of the choices' normalised log-likelihoods at the correct one) and ``margin`` (the correct
choice's normalised log-likelihood minus the best other's). Every metric is a weighted mean over items
(weights 1: the whole benchmark; an estimate from a few weighted anchor items otherwise):

    accuracy     sum(w correct) / sum(w)       (text: sum(w right) / sum(w tokens), next-token top-1)
    loss         sum(w nll) / sum(w tokens)    perplexity = exp(loss)
    choice_loss  sum(w choice_nll) / sum(w)

:class:`ItemScores` keeps, compactly, what a candidate did per item (for paired comparisons): ``correct``
(text: the window's share of right tokens) and a graded ``score`` (multiple choice: the margin; otherwise
the mean log-likelihood per scored token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .benchmarks import BenchmarkData

__all__ = ["item_table", "weighted_metrics", "ItemScores", "item_scores", "item_of_rows"]


def item_of_rows(data: BenchmarkData) -> torch.Tensor:
    """The item each row belongs to (multiple choice: its item; other kinds: the row itself), from 0."""
    if data.item is None:
        return torch.arange(len(data))
    return torch.unique_consecutive(data.item.cpu(), return_inverse=True)[1]


def item_table(nll: torch.Tensor, tokens: torch.Tensor, right: torch.Tensor, data: BenchmarkData) -> dict:
    """Per-item statistics (float64 tensors) from per-row ``nll``, ``tokens`` and ``right``."""
    if data.kind != "multiple_choice":
        return {"nll": nll, "tokens": tokens.double(), "right": right.double(),
                "correct": (right == tokens).double()}
    correct = data.correct.cpu()
    normalised = -nll / data.norm_length.cpu().clamp(min=1e-9)
    counts = torch.unique_consecutive(data.item.cpu(), return_counts=True)[1].tolist()
    right_item, choice_nll, margin = [], [], []
    start = 0
    for count in counts:
        choices = slice(start, start + count)
        values, truth = normalised[choices], correct[choices]
        right_item.append(float(bool(truth[int(torch.argmax(values))])))
        choice_nll.append(-float(torch.log_softmax(values, dim=0)[truth].sum()))
        others = values[~truth]
        margin.append(float(values[truth].max() - others.max()) if len(others) else 0.0)
        start += count
    return {"nll": nll[correct], "tokens": tokens[correct].double(), "correct": torch.tensor(right_item,
            dtype=torch.float64), "choice_nll": torch.tensor(choice_nll, dtype=torch.float64),
            "margin": torch.tensor(margin, dtype=torch.float64)}


def weighted_metrics(table: dict, kind: str, weights: torch.Tensor | None = None) -> dict[str, float]:
    """The kind's metrics from an item table, each item weighted (default 1)."""
    def total(name: str) -> torch.Tensor:
        values = table[name]
        return values.sum() if weights is None else (values * weights).sum()

    count = float(len(table["nll"])) if weights is None else float(weights.sum())
    loss = float(total("nll") / total("tokens"))
    metrics = {"loss": loss}
    if kind == "text":
        metrics["accuracy"] = float(total("right") / total("tokens"))
        metrics["perplexity"] = math.exp(min(loss, 700.0))
    else:
        metrics["accuracy"] = float(total("correct")) / count
    if kind == "multiple_choice":
        metrics["choice_loss"] = float(total("choice_nll")) / count
    return {name: metrics[name] for name in ("accuracy", "loss", "perplexity", "choice_loss") if name in metrics}


@dataclass(frozen=True)
class ItemScores:
    """Per item, as float16: ``correct`` (1/0; a text window's share of right tokens) and ``score``."""

    correct: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.correct)


def item_scores(table: dict, kind: str) -> ItemScores:
    correct = table["right"] / table["tokens"].clamp(min=1) if kind == "text" else table["correct"]
    score = table["margin"] if kind == "multiple_choice" else -table["nll"] / table["tokens"].clamp(min=1)
    return ItemScores(correct.numpy().astype(np.float16), score.numpy().astype(np.float16))
