"""The many-expert study's numbers: the target, the selection rules and the paired bootstrap.

- **Target**: the mean over skills of accuracy (each skill's share of items answered right), one number.
- **Selection rule** (the same for every search, random search and baseline family): among the candidates,
  the one with the highest target on the selection split; a tie goes to the candidate listed first (a
  search's hall of fame is listed best first by search fitness; a baseline grid in its written order).
- **Paired bootstrap** of (a - b) on the target over test items: each resample draws, within every skill,
  as many items as the skill has (with replacement), and takes the mean over skills of the per-skill mean
  difference; 10,000 resamples; the 2.5th and 97.5th percentiles bound the 95% interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["target", "select", "paired_bootstrap_by_skill"]


def target(correct: Mapping[str, Sequence[int]]) -> float:
    """Mean over skills of the share of items answered right."""
    return float(np.mean([np.mean(values) for values in correct.values()]))


def select(candidates: Sequence[str], selection: Mapping[str, Mapping[str, Sequence[int]]]) -> str:
    """The candidate (a label) with the highest target on the selection split; the first on a tie."""
    if not candidates:
        raise ValueError("no candidates to select from")
    best = max(target(selection[label]) for label in candidates)
    return next(label for label in candidates if target(selection[label]) == best)


def paired_bootstrap_by_skill(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]],
                              resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean difference, 2.5th percentile, 97.5th percentile)`` of target(a) - target(b), resampling items
    within each skill (see the module docstring); ``a`` and ``b`` hold per skill one value per item, in the
    same order."""
    if set(a) != set(b):
        raise ValueError(f"different skills: {sorted(a)} and {sorted(b)}")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    mean = 0.0
    for skill in sorted(a):
        if len(a[skill]) != len(b[skill]) or len(a[skill]) == 0:
            raise ValueError(f"{skill}: need one value per item for both, got {len(a[skill])} and {len(b[skill])}")
        difference = np.asarray(a[skill], dtype=np.float64) - np.asarray(b[skill], dtype=np.float64)
        picks = rng.integers(0, len(difference), size=(resamples, len(difference)))
        total += difference[picks].mean(axis=1)
        mean += difference.mean()
    total /= len(a)
    low, high = np.percentile(total, [2.5, 97.5])
    return float(mean / len(a)), float(low), float(high)
