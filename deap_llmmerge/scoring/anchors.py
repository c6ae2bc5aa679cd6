"""Anchor items: a few items, weighted, that stand for a whole benchmark (as tinyBenchmarks' anchor points).

Items that the scored candidates answer alike carry the same information about the next candidate. So the
items are clustered by their response pattern (per item, every scored candidate's correctness and graded
score) with k-means (k-means++ seeding, a seeded generator), one anchor per cluster: the item nearest its
cluster's centre, weighted by the cluster's share of the items. A candidate's whole-benchmark metric is
then estimated as the anchors' weighted mean (:func:`~deap_llmmerge.scoring.items.weighted_metrics`).

**Calibrated accuracy.** The anchors' 0/1 answers are a coarse signal: two merges a point apart often get the
same anchors right. Their graded scores (multiple choice: the margin of the right choice) move with every
item. So accuracy is estimated as ``b0 + b1 * anchor accuracy + b2 * anchor mean score`` (weighted means),
the coefficients fitted by least squares on the candidates scored on every item (:func:`calibrate`), and
used only where, cross-validated over those candidates (anchors chosen again without the held-out ones),
they predict the whole-benchmark accuracy better than the anchors' accuracy alone.
"""

from __future__ import annotations

import numpy as np

from .items import item_scores

__all__ = ["choose_anchors", "anchor_count", "calibrate", "calibrated_accuracy", "calibrate_estimates"]


def anchor_count(setting: float, items: int) -> int:
    """How many anchors ``anchors: N`` means for a benchmark of ``items`` items: N items, or the share N of
    them when N is below 1 (at least one, at most all)."""
    count = round(setting * items) if setting < 1 else int(setting)
    return max(1, min(items, count))


def _features(correct: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per item, its response pattern: every candidate's correctness and its graded score scaled to the same
    spread (items are rows)."""
    score = np.asarray(score, dtype=np.float64)
    spread = score.std() or 1.0
    return np.concatenate([np.asarray(correct, dtype=np.float64), 0.5 * score / spread], axis=0).T


def choose_anchors(correct: np.ndarray, score: np.ndarray, count: int, seed: int = 0,
                   iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``(anchor item indices, weights summing to 1)`` from the per-item results ``[candidates, items]`` of
    the candidates scored on the whole benchmark."""
    points = _features(correct, score)
    n = len(points)
    count = min(count, n)
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(n)]]
    for _ in range(count - 1):  # k-means++: far points are likelier centres
        distance = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        total = distance.sum()
        centres.append(points[rng.choice(n, p=distance / total)] if total > 0 else points[rng.integers(n)])
    centres = np.array(centres)
    for _ in range(iterations):
        assigned = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        moved = np.array([points[assigned == k].mean(axis=0) if (assigned == k).any() else centres[k]
                          for k in range(count)])
        if np.allclose(moved, centres):
            break
        centres = moved
    assigned = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    anchors, weights = [], []
    for k in range(count):
        members = np.flatnonzero(assigned == k)
        if len(members) == 0:
            continue
        nearest = members[((points[members] - centres[k]) ** 2).sum(axis=1).argmin()]
        anchors.append(int(nearest))
        weights.append(len(members) / n)
    order = np.argsort(anchors)
    return np.array(anchors)[order], np.array(weights)[order]


def _anchor_means(correct: np.ndarray, score: np.ndarray, anchors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.stack([np.asarray(correct, np.float64)[:, anchors] @ w / w.sum(),
                     np.asarray(score, np.float64)[:, anchors] @ w / w.sum()], axis=1)


def calibrate(correct: np.ndarray, score: np.ndarray, anchors: np.ndarray, weights: np.ndarray, seed: int = 0,
              fewest: int = 5, folds: int = 10) -> tuple[float, float, float] | None:
    """``(b0, b1, b2)`` of the calibrated accuracy for ``anchors`` from the per-item results ``[candidates,
    items]`` of the candidates scored on every item; None with fewer than ``fewest`` of them, non-finite
    scores, or when, cross-validated over ``folds`` folds of the candidates (anchors chosen again without
    each fold, as many), it predicts the held-out candidates' accuracy no better than the anchors' accuracy."""
    correct, score = np.asarray(correct, np.float64), np.asarray(score, np.float64)
    truth = correct.mean(axis=1)
    if len(truth) < fewest or not np.isfinite(score).all():
        return None
    plain, fitted = [], []
    for fold in np.array_split(np.arange(len(truth)), min(folds, len(truth))):
        keep = np.setdiff1d(np.arange(len(truth)), fold)
        chosen, chosen_weights = choose_anchors(correct[keep], score[keep], len(anchors), seed)
        train, test = (_anchor_means(correct[rows], score[rows], chosen, chosen_weights) for rows in (keep, fold))
        coefficients = np.linalg.lstsq(np.c_[np.ones(len(keep)), train], truth[keep], rcond=None)[0]
        fitted += list(np.abs(np.c_[np.ones(len(fold)), test] @ coefficients - truth[fold]))
        plain += list(np.abs(test[:, 0] - truth[fold]))
    if np.mean(fitted) >= np.mean(plain):
        return None
    means = _anchor_means(correct, score, anchors, weights)
    b0, b1, b2 = np.linalg.lstsq(np.c_[np.ones(len(truth)), means], truth, rcond=None)[0]
    return float(b0), float(b1), float(b2)


def calibrated_accuracy(coefficients: tuple[float, float, float], accuracy: float, score: float) -> float:
    """The calibrated estimate from the anchors' weighted accuracy and mean graded score, within [0, 1]."""
    b0, b1, b2 = coefficients
    return float(min(1.0, max(0.0, b0 + b1 * accuracy + b2 * score)))


def calibrate_estimates(metrics: dict, tables: dict, weights: dict | None, calibration: dict, kinds: dict) -> None:
    """Replace, in ``metrics``, each calibrated benchmark's accuracy estimate from the anchors (its item
    ``tables`` with their ``weights``) with the calibrated one."""
    for name, coefficients in calibration.items():
        table, weight = tables.get(name), (weights or {}).get(name)
        if table is not None and weight is not None:
            scores = item_scores(table, kinds[name])
            w = np.asarray(weight, dtype=np.float64)
            accuracy, score = (float(w @ v.astype(np.float64) / w.sum()) for v in (scores.correct, scores.score))
            metrics[name]["accuracy"] = calibrated_accuracy(coefficients, accuracy, score)
