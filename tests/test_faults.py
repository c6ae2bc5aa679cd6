"""Numerical faults and memory pressure while scoring: reported and survived."""

import math

import pytest
import torch
from conftest import tiny_benchmark, tiny_model

from deap_llmmerge import LLMMergeGA, calculate_accuracy, calculate_loss


def _ga(**kwargs):
    return LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), population_size=4,
                      max_generations=1, seed=0, **kwargs)


def loss_fitting_two_sequences(logits, labels):
    """calculate_loss on a 'GPU' that runs out of memory above 2 sequences per batch."""
    if logits.shape[0] > 2:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return calculate_loss(logits, labels)


def test_out_of_memory_retries_with_smaller_batches(caplog):
    ga = _ga(batch_size=8, calculate_loss=loss_fitting_two_sequences)
    values = ga.toolbox.evaluate([0] * len(ga.pool.part_names))
    reference = _ga(batch_size=2).toolbox.evaluate([0] * len(ga.pool.part_names))
    assert values[0] == reference[0] and values[1] == pytest.approx(reference[1], rel=1e-6)
    assert ga.evaluator.batch_size == 2
    assert "retrying with batch size 4" in caplog.text and "retrying with batch size 2" in caplog.text


def test_out_of_memory_at_batch_size_one_fails_that_candidate():
    def never_fits(logits, labels):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    ga = _ga(batch_size=2, calculate_loss=never_fits, max_failed_share=1.0)
    ga.run()
    assert ga.failed_evaluations == ga.cached_map.evaluations > 0


def test_nan_metrics_score_worst_with_a_warning(caplog):
    def nan_loss(logits, labels):
        return float("nan"), 1

    ga = _ga(calculate_loss=nan_loss)
    values = ga.toolbox.evaluate([0] * len(ga.pool.part_names))
    assert values == (-math.inf, math.inf)
    assert "non-finite metrics" in caplog.text


def test_accuracy_is_unchanged_by_the_retry():
    ga = _ga(batch_size=8, calculate_accuracy=calculate_accuracy, calculate_loss=loss_fitting_two_sequences)
    genome = [1] * len(ga.pool.part_names)
    assert ga.toolbox.evaluate(genome)[0] == _ga(batch_size=1).toolbox.evaluate(genome)[0]
