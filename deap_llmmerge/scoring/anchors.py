"""Anchor items: a few items, weighted, that stand for a whole benchmark (as tinyBenchmarks' anchor points).

Items that the scored candidates answer alike carry the same information about the next candidate. So the
items are clustered by their response pattern (per item, every scored candidate's correctness and graded
score) with k-means (k-means++ seeding, a seeded generator), one anchor per cluster: the item nearest its
cluster's centre, weighted by the cluster's share of the items. A candidate's whole-benchmark metric is
then estimated as the anchors' weighted mean (:func:`~deap_llmmerge.scoring.items.weighted_metrics`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["choose_anchors", "anchor_count"]


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
