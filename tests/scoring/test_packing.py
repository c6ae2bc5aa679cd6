"""Multiple choice with the context scored once: packed rows give the per-choice log-likelihoods of the plain
path (within 1e-4, float32), the same accuracies, padded or not, and compose with the other savings."""

import json
import random

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer

from deap_llmmerge import BenchmarkData, build_benchmark, make_toolbox
from deap_llmmerge.scoring.benchmarks import IGNORE_INDEX
from deap_llmmerge.scoring.metrics import benchmark_metrics, model_inputs, row_statistics
from deap_llmmerge.scoring.packing import pack_choices
from deap_llmmerge.scoring.population import PopulationScorer

ARCHITECTURES = ["llama", "qwen2", "gpt2", "gemma"]


def choices_file(tmp_path, same_length=False):
    rows = [{"context": f"the fox {i} jumps over?", "choices": ["yes", "no!", "why"] if same_length else
             ["yes it is", "no", "maybe so", "never"][: 2 + i % 3], "answer": i % 2} for i in range(9)]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return tmp_path / "mc.jsonl"


def left_padded(data: BenchmarkData) -> BenchmarkData:
    """The same rows with their padding moved to the left."""
    ids, labels, mask = data.input_ids.clone(), data.labels.clone(), data.attention_mask.clone()
    for row in range(len(data)):
        n = int(mask[row].sum())
        for tensor, fill in ((ids, 1), (labels, IGNORE_INDEX), (mask, 0)):
            kept = tensor[row, :n].clone()
            tensor[row] = fill
            tensor[row, -n:] = kept
    return BenchmarkData(ids, labels, mask, kind=data.kind, item=data.item, correct=data.correct,
                         norm_length=data.norm_length)


def unpadded(data: BenchmarkData) -> BenchmarkData:
    assert bool(data.attention_mask.all())
    return BenchmarkData(data.input_ids, data.labels, kind=data.kind, item=data.item, correct=data.correct,
                         norm_length=data.norm_length)


def per_row(model, batches, n_rows):
    """(nll, tokens) of every row from ``batches`` (packed or not)."""
    nll, tokens = torch.zeros(n_rows, dtype=torch.float64), torch.zeros(n_rows, dtype=torch.long)
    with torch.no_grad():
        for batch in batches:
            logits = model(**model_inputs(batch)).logits
            scored = logits[:, :-1][batch.labels[:, 1:] != IGNORE_INDEX]
            stats = row_statistics(scored, batch.labels, batch.scored_rows, len(batch.rows))
            nll[batch.rows] += stats[0]
            tokens[batch.rows] += stats[1]
    return nll, tokens


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("padding", ["right", "left", "none"])
def test_packed_choices_give_the_plain_paths_log_likelihoods(arch, padding, tmp_path):
    data = build_benchmark("multiple_choice", choices_file(tmp_path, same_length=padding == "none"), tiny_tokenizer())
    data = {"right": lambda d: d, "left": left_padded, "none": unpadded}[padding](data)
    toolbox = make_toolbox([tiny_model(arch, 1), tiny_model(arch, 2)], data, "blend", batch_size=8)
    scorer: PopulationScorer = toolbox.evaluate.func.state.scorer
    packed = scorer.batches["benchmark"]
    assert scorer.packing and all(batch.scored_rows is not None for batch in packed)
    assert sum(batch.input_ids.numel() for batch in packed) < data.input_ids.numel()
    model = toolbox.evaluate.func.merged_model(toolbox.pure(source=0))
    plain_nll, plain_tokens = per_row(model, data.batches(8, "cpu"), len(data))
    packed_nll, packed_tokens = per_row(model, packed, len(data))
    assert torch.equal(plain_tokens, packed_tokens)
    assert torch.allclose(packed_nll, plain_nll, rtol=1e-4, atol=1e-4), (packed_nll - plain_nll).abs().max()
    random.seed(0)
    population = toolbox.population(n=6)
    for ind, values in zip(population, toolbox.map(toolbox.evaluate, population)):
        reference = benchmark_metrics(toolbox.evaluate.func.merged_model(ind), data, 8)
        assert values[0] == reference["accuracy"] and values[1] == pytest.approx(reference["loss"], rel=1e-5)


def test_an_item_without_a_shared_context_or_with_one_choice_is_left_as_it_is():
    ids = torch.tensor([[5, 6, 7, 8], [9, 6, 7, 3], [5, 4, 3, 2]])
    labels = torch.tensor([[-100, -100, 7, 8], [-100, -100, 7, 3], [-100, 4, 3, 2]])
    data = BenchmarkData(ids, labels, kind="multiple_choice", item=torch.tensor([0, 0, 1]),
                         correct=torch.tensor([True, False, True]), norm_length=torch.ones(3, dtype=torch.float64))
    assert pack_choices(next(data.batches(8, "cpu")), data.item) is None


def test_batches_hold_rows_of_about_one_length_and_score_as_in_file_order():
    lengths = [4, 30, 5, 29, 6, 28, 7, 27]  # short and long rows in turn: file order pads every batch
    ids = torch.zeros(len(lengths), 32, dtype=torch.long)
    mask = torch.zeros(len(lengths), 32, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.arange(1, n + 1) % 60 + 1
        mask[r, :n] = 1
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE_INDEX))
    data = BenchmarkData(ids, labels, attention_mask=mask)

    def padded(by_length):
        return sum(batch.input_ids.numel() for batch in data.batches(2, "cpu", by_length))

    assert padded(True) == 2 * (5 + 7 + 28 + 30) and padded(False) == 2 * (30 + 29 + 28 + 27)
    assert sorted(torch.cat(data.batch_rows(2)).tolist()) == list(range(len(lengths)))
    model = tiny_model("llama", 1)
    ordered, file_order = (per_row(model, data.batches(2, "cpu", by_length), len(data)) for by_length in (True, False))
    assert torch.equal(ordered[1], file_order[1]) and torch.allclose(ordered[0], file_order[0], atol=1e-4)
