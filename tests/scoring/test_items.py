"""Per-item results: what each candidate did on each item, kept for paired comparisons."""

import numpy as np
import pytest
import torch
from conftest import tiny_benchmark, tiny_model, tiny_tokenizer

from deap_llmmerge import LLMMergeGA, build_benchmark
from deap_llmmerge.scoring.items import ItemScores
from deap_llmmerge.scoring.paired import compare, paired_bootstrap


def test_the_paired_bootstrap_matches_a_hand_computed_case():
    a, b = [1, 1, 0, 1], [0, 1, 0, 0]  # differences 1, 0, 0, 1: mean 0.5
    mean, low, high = paired_bootstrap(a, b, resamples=20_000, seed=3)
    assert mean == 0.5
    # a resample's mean is k/4 with k ~ Binomial(4, 0.5): P(k=0) = 1/16, so the 2.5th percentile is 0 and
    # the 97.5th is 1 (P(k=4) = 1/16 > 2.5%)
    assert (low, high) == (0.0, 1.0)
    mean, low, high = paired_bootstrap([1] * 40 + [0] * 10, [0] * 50, resamples=5000)
    assert mean == 0.8 and 0.66 <= low <= 0.72 and 0.88 <= high <= 0.92  # normal: 0.8 +- 1.96 * 0.4 / sqrt(50)
    with pytest.raises(ValueError, match="one value per item"):
        paired_bootstrap([], [])


def test_compare_says_better_only_when_the_interval_lies_above_zero():
    best = {"qa": ItemScores(np.ones(30, dtype=np.float16), np.full(30, 2.0, dtype=np.float16))}
    worse = {"qa": ItemScores(np.zeros(30, dtype=np.float16), np.full(30, 1.0, dtype=np.float16))}
    rows = compare(best, {"source 0": worse, "itself": best}, resamples=1000)
    verdicts = {(row["against"], row["measure"]): row["better"] for row in rows}
    assert verdicts == {("source 0", "correct"): True, ("source 0", "score"): True,
                        ("itself", "correct"): False, ("itself", "score"): False}


def test_every_scored_candidate_keeps_its_item_results_and_they_match_its_metrics(tmp_path):
    import json

    rows = [{"context": f"q {i}?", "choices": ["yes", "no", "maybe"], "answer": i % 3} for i in range(7)]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "play.txt").write_text("the quick brown fox jumps over the lazy dog. " * 8)
    tokenizer = tiny_tokenizer()
    benchmarks = {"qa": build_benchmark("multiple_choice", tmp_path / "mc.jsonl", tokenizer),
                  "play": build_benchmark("text", tmp_path / "play.txt", tokenizer, window=16),
                  "rows": tiny_benchmark()}
    ga = LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], benchmarks, population_size=6,
                    max_generations=2, genome="blend", objectives=["qa.accuracy", "play.loss", "rows.accuracy"])
    ga.run()
    assert set(ga.cached_map.items) == set(ga.cached_map.cache)
    for key, items in ga.cached_map.items.items():
        accuracy, play_loss, rows_accuracy = ga.cached_map.cache[key]
        assert len(items["qa"]) == 7 and len(items["rows"]) == 12 and len(items["play"]) == len(benchmarks["play"])
        assert float(items["qa"].correct.astype(np.float64).mean()) == pytest.approx(accuracy)
        assert float(items["rows"].correct.astype(np.float64).mean()) == pytest.approx(rows_accuracy)
        assert items["qa"].correct.dtype == np.float16 and items["qa"].score.dtype == np.float16
        assert set(np.unique(items["qa"].correct)) <= {0.0, 1.0}
        margin_right = items["qa"].score > 0
        assert np.array_equal(margin_right, items["qa"].correct == 1)  # the margin's sign is the answer
    assert not torch.is_tensor(items["qa"].correct)
