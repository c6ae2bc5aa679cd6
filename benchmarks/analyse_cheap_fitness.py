"""Anchors and racing on SmolLM2, from the per-item results ``bench_cheap_fitness.py`` wrote: every one of its
candidates scored on all the items, so an estimate from a few items can be checked against the truth.

- **anchors**: chosen (as the loop does) from the first ``--first`` candidates (a generation 0), N = 10% of
  the items; for the other candidates, the mean absolute error of the estimated accuracy against the
  whole-set accuracy and the Spearman rank correlation over them, for the calibrated estimate (the
  library's, fitted on the first candidates) and the anchors' plain weighted accuracy; beside it, uniformly
  random items of the same count (median of 20 draws), for scale.
- **racing**: replayed as a tournament search of generations of ``--generation`` candidates with one elite:
  each later candidate is scored in slices of the shuffled items and stopped once its optimistic mean
  difference from the best so far, item by item, is below 0 (the library's rule,
  :func:`deap_llmmerge.scoring.cheap.race_stops`, at its defaults: 8 slices, z 1.96; and at other settings),
  or, as before, once its own 99% optimistic accuracy is below the best's (4 slices); the share of item
  scorings saved, and whether the best found is the best of all (or within the paired bootstrap interval
  of it).

    .venv/bin/python benchmarks/analyse_cheap_fitness.py .cache/cheap-fitness
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from deap_llmmerge.scoring.anchors import calibrate, calibrated_accuracy, choose_anchors
from deap_llmmerge.scoring.cheap import Race, race_stops
from deap_llmmerge.scoring.objectives import Objective, Term
from deap_llmmerge.scoring.paired import paired_bootstrap


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def anchors(correct: np.ndarray, score: np.ndarray, first: int, share: float) -> dict:
    count = round(share * correct.shape[1])
    chosen, weights = choose_anchors(correct[:first], score[:first], count)
    truth = correct[first:].mean(axis=1)
    guess = (correct[first:][:, chosen] * weights).sum(axis=1)
    rng = np.random.default_rng(0)
    random = []
    for _ in range(20):
        picked = rng.choice(correct.shape[1], count, replace=False)
        estimate_ = correct[first:][:, picked].mean(axis=1)
        random.append((np.abs(estimate_ - truth).mean(), spearman(estimate_, truth)))
    coefficients = calibrate(correct[:first], score[:first], chosen, weights)
    margins = (score[first:][:, chosen] * weights).sum(axis=1)
    calibrated = guess if coefficients is None else \
        np.array([calibrated_accuracy(coefficients, a, m) for a, m in zip(guess, margins)])
    return {"anchors": count, "candidates estimated": len(truth),
            "calibrated (the library's estimate)": {"coefficients": coefficients,
                                                    "MAE": float(np.abs(calibrated - truth).mean()),
                                                    "Spearman": spearman(calibrated, truth)},
            "MAE": float(np.abs(guess - truth).mean()), "Spearman": spearman(guess, truth),
            "random items: median MAE": float(np.median([r[0] for r in random])),
            "random items: median Spearman": float(np.median([r[1] for r in random]))}


def racing(correct: np.ndarray, generation: int, slices: int, paired: bool, z: float) -> dict:
    n_candidates, n_items = correct.shape
    order = np.random.default_rng(0).permutation(n_items)
    parts = np.array_split(order, slices)
    best = int(np.argmax(correct[:generation].mean(axis=1)))
    scorings, stopped = generation * n_items, []
    objective = Objective((Term("qa", "accuracy"),), "qa.accuracy")
    for start in range(generation, n_candidates, generation):  # each generation raced against the best before it
        race = Race("lexicographic", ((float(correct[best].mean()),),), slices, z=z,
                    reference=(("qa", correct[best]),) if paired else None)
        finished = []
        for c in range(start, min(start + generation, n_candidates)):
            seen = np.array([], dtype=int)
            for s, part in enumerate(parts):
                seen = np.sort(np.concatenate([seen, part]))
                scorings += len(part)
                if s == slices - 1:
                    finished.append(c)
                    break
                tables = {"qa": {"correct": torch.as_tensor(correct[c, seen], dtype=torch.float64)}}
                if race_stops(race, [objective], [1.0], tables, {"qa": "multiple_choice"}, {"qa": seen},
                          {"qa": torch.ones(len(seen), dtype=torch.float64)}, {"qa": len(seen) / n_items}):
                    stopped.append(c)
                    break
        best = max([best, *finished], key=lambda c: correct[c].mean())
    true_best = int(np.argmax(correct.mean(axis=1)))
    mean, low, high = paired_bootstrap(correct[true_best], correct[best])
    return {"slices": slices, "paired": paired, "z": z, "item scorings": scorings,
            "without racing": n_candidates * n_items,
            "share saved": 1 - scorings / (n_candidates * n_items), "stopped": len(stopped),
            "best found": best, "best of all": true_best, "best found is the best of all": best == true_best,
            "best of all - best found (95% CI)": [mean, low, high], "within the interval": low <= 0 <= high}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--first", type=int, default=10)
    parser.add_argument("--generation", type=int, default=8)
    parser.add_argument("--timing-order", type=Path, help="a --timing-only run's timing-order.json (rows in file "
                        "order, rows by length, packed by length)")
    args = parser.parse_args()
    with np.load(args.folder / "items.npz") as content:
        correct, score = content["correct"].astype(np.float64), content["score"].astype(np.float64)
    timing = json.loads((args.folder / "timing.json").read_text())
    result = {"timing": timing, "anchors (10% of the items)": anchors(correct, score, args.first, 0.1),
              "racing, before (unpaired, 4 slices, z 2.58)": racing(correct, args.generation, 4, False, 2.58),
              "racing (library defaults: paired, 8 slices, z 1.96)": racing(correct, args.generation, 8, True, 1.96),
              "racing, paired, other settings": [
                  {key: value for key, value in racing(correct, args.generation, slices, True, z).items()
                   if key in ("slices", "z", "share saved", "best found is the best of all")}
                  for slices in (4, 8, 16) for z in (2.58, 1.96)]}
    rows = timing["seconds per candidate, rows"]
    packed = timing["seconds per candidate, packed"]
    cheap = timing["seconds per candidate, packed, on the anchors"]
    result["speed"] = {"shared contexts (rows / packed)": rows / packed,
                       "anchors, packed (rows on every item / packed on the anchors)": rows / cheap,
                       "and if racing saved on the anchors what it saves on every item":
                           rows / cheap / max(1e-9, 1 - result["racing (library defaults: paired, 8 slices, z 1.96)"][
                               "share saved"])}
    if args.timing_order is not None:
        order = json.loads(args.timing_order.read_text())
        before, by_length, packed_by_length = (order[f"seconds per candidate, {name}"] for name in
                                               ("rows, file order", "rows", "packed"))
        result["speed"]["batches by length"] = {
            "rows by length / packed by length (packing alone)": by_length / packed_by_length,
            "rows in file order / rows by length (sorting alone)": before / by_length,
            "rows in file order / packed by length (both: today's path against the new one)": before / packed_by_length}
    print(json.dumps(result, indent=1))
    (args.folder / "analysis.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
