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
    assert ga.evaluator.state.scorer.batch_size == 2
    assert "retrying with batch size 4" in caplog.text and "retrying with batch size 2" in caplog.text


def test_the_cpu_running_out_of_memory_is_retried_from_the_first_forward_pass(monkeypatch, caplog):
    """A real allocation failure of torch's CPU allocator (not a GPU error) whenever a batch holds more than
    3 rows, with a batch size far above the benchmark's 12 rows: the savings check, the search and the
    final scoring all go on with smaller batches."""
    from transformers import LlamaForCausalLM

    forward = LlamaForCausalLM.forward

    def short_of_memory(self, input_ids=None, **kwargs):
        if input_ids.shape[0] > 3:
            torch.empty(2**45)  # "DefaultCPUAllocator: can't allocate memory"
        return forward(self, input_ids=input_ids, **kwargs)

    reference = _ga(batch_size=3)
    reference.run()
    monkeypatch.setattr(LlamaForCausalLM, "forward", short_of_memory)
    ga = _ga(batch_size=100000)
    best = ga.run()
    assert ga.failed_evaluations == 0 and ga.evaluator.state.scorer.batch_size <= 3
    assert best.fitness.values == pytest.approx(reference.best.fitness.values, rel=1e-6)
    model = ga.merge_layers(best)
    held_out = tiny_benchmark(seed=3)
    assert ga.evaluate(model, held_out) == pytest.approx(reference.evaluate(model, held_out))
    assert "retrying with batch size 50000" in caplog.text


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


def loss_logging_batches(logits, labels):
    """calculate_loss that runs out of memory above 2 sequences, noting every batch size it saw."""
    import os

    with open(os.environ["DEAP_LLMMERGE_TEST_BATCHES"], "a") as handle:
        handle.write(f"{os.getpid()} {logits.shape[0]}\n")
    return loss_fitting_two_sequences(logits, labels)


@pytest.mark.slow  # starts processes
def test_a_worker_keeps_its_smaller_batch_size(tmp_path, monkeypatch):
    import os

    from deap_llmmerge import PoolMap

    log_file = tmp_path / "batches.txt"
    monkeypatch.setenv("DEAP_LLMMERGE_TEST_BATCHES", str(log_file))
    pool = PoolMap(1)
    try:
        ga = _ga(batch_size=8, calculate_loss=loss_logging_batches, map=pool)
        ga.max_generations = 2
        ga.run()
    finally:
        pool.close()
    sizes = [int(line.split()[1]) for line in log_file.read_text().splitlines()
             if int(line.split()[0]) != os.getpid()]
    assert sizes and sizes[0] > 2
    first_small = next(i for i, size in enumerate(sizes) if size <= 2)
    assert all(size <= 2 for size in sizes[first_small:]), sizes
    assert ga.cached_map.evaluations >= 3


def test_scoring_a_model_at_the_end_retries_out_of_memory_too(monkeypatch, caplog):
    from deap_llmmerge.scoring import evaluator as evaluation

    ga = _ga(batch_size=8)
    real = evaluation.benchmark_items

    def fitting_two(model, data, batch_size):
        if batch_size > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(model, data, batch_size)

    monkeypatch.setattr(evaluation, "benchmark_items", fitting_two)
    model = ga.merge_layers([0] * len(ga.pool.part_names))
    assert ga.evaluate(model, tiny_benchmark(seed=3)) == pytest.approx(
        _ga(batch_size=2).evaluate(model, tiny_benchmark(seed=3)))
    assert "retrying with batch size 2" in caplog.text
