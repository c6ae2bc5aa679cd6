"""Is one merge better than another on the same items? A paired bootstrap over the items.

Both candidates answered the same items, so the question is about their per-item differences: the mean
difference, and the 95% interval of that mean over resamples of the items (with replacement).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_bootstrap", "compare"]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean of a - b, 2.5th and 97.5th percentile of that mean over resampled items)``; ``a`` and ``b``
    hold one value per item, in the same order."""
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if difference.ndim != 1 or len(difference) == 0:
        raise ValueError(f"need one value per item for both, got shapes {np.shape(a)} and {np.shape(b)}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(difference))
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        picks = rng.integers(0, len(difference), size=(count, len(difference)))
        means[start:start + count] = difference[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(difference.mean()), float(low), float(high)


def compare(best: dict, others: dict[str, dict], resamples: int = 10_000) -> list[dict]:
    """Rows of ``{against, benchmark, measure, mean, ci95, better}``: ``best`` against each of ``others``
    (label -> {benchmark: ItemScores}) on every benchmark both have, for the items' ``correct`` (accuracy)
    and graded ``score``; ``better`` is whether the interval lies above 0."""
    rows = []
    for label, scores in others.items():
        for benchmark, mine in best.items():
            theirs = scores.get(benchmark)
            if theirs is None or len(theirs) != len(mine):
                continue
            for measure in ("correct", "score"):
                mean, low, high = paired_bootstrap(getattr(mine, measure), getattr(theirs, measure), resamples)
                if not np.isfinite([mean, low, high]).all():  # a score beyond float16: no verdict
                    continue
                rows.append({"against": label, "benchmark": benchmark, "measure": measure, "mean": mean,
                             "ci95": [low, high], "better": low > 0})
    return rows
