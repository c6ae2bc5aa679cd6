"""Accuracy and loss exactly as DESIGN.md defines them, checked against a plain loop."""

import math

import pytest
import torch
from conftest import tiny_benchmark, tiny_model

from deap_llmmerge import BenchmarkData, BenchmarkDataError, calculate_accuracy, calculate_loss
from deap_llmmerge.scoring.benchmarks import load_benchmark
from deap_llmmerge.scoring.metrics import score


class Payload:
    """Not a tensor: a weights_only load must refuse to build it."""


def reference(model, input_ids, labels):
    """Sequence by sequence, position by position: the definitions written out."""
    total, tokens, correct = 0.0, 0, 0
    with torch.no_grad():
        for ids, labs in zip(input_ids, labels):
            logits = model(input_ids=ids[None]).logits[0]
            all_right = True
            for t in range(len(ids) - 1):
                target = int(labs[t + 1])
                if target == -100:
                    continue
                log_probs = torch.log_softmax(logits[t].double(), dim=-1)
                total -= float(log_probs[target])
                tokens += 1
                all_right &= int(logits[t].argmax()) == target
            correct += all_right
    return correct / len(input_ids), total / tokens


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_accuracy_and_loss_match_the_reference(arch, batch_size):
    model = tiny_model(arch, 3)
    bench = tiny_benchmark(n=11, length=9)
    bench["labels"][3, 5:] = -100  # uneven numbers of labeled tokens per sequence
    accuracy, loss = score(model, BenchmarkData(**bench), (calculate_accuracy, calculate_loss), batch_size)
    want_accuracy, want_loss = reference(model, bench["input_ids"], bench["labels"])
    assert accuracy == want_accuracy
    assert math.isclose(loss, want_loss, rel_tol=1e-5)


def test_accuracy_counts_a_sequence_only_when_every_labeled_position_is_right():
    model = tiny_model("llama", 0)
    ids = torch.randint(0, 64, (4, 6))
    with torch.no_grad():
        predictions = model(input_ids=ids).logits.argmax(-1)
    labels = torch.full_like(ids, -100)
    labels[:, 1:] = predictions[:, :-1]  # labels the model gets right everywhere
    labels[1, 3] = (labels[1, 3] + 1) % 64  # one wrong position in row 1
    accuracy, loss = score(model, BenchmarkData(ids, labels), (calculate_accuracy, calculate_loss), 2)
    assert accuracy == 0.75 and loss > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(labels=b["labels"][:, :-1]), r"labels has shape \(12, 9\), input_ids has \(12, 10\)"),
        (lambda b: b["labels"].__setitem__((4,), -100), r"1 sequence\(s\) have no labeled position .* row 4"),
        (lambda b: b.update(input_ids=b["input_ids"].float()), "input_ids must hold integers"),
        (lambda b: b.update(input_ids=b["input_ids"][0]), r"input_ids must have shape \[N, T\]"),
        (lambda b: b.update(extra=b["labels"]), r"unknown benchmark keys: \['extra'\]"),
        (lambda b: b.pop("labels"), "needs both 'input_ids' and 'labels'"),
    ],
)
def test_bad_benchmark_tensors_are_named(change, message):
    bench = tiny_benchmark()
    change(bench)
    with pytest.raises(BenchmarkDataError, match=message):
        BenchmarkData.coerce(bench)


def test_benchmark_files_load_weights_only(tmp_path):
    path = tmp_path / "bench.pt"
    torch.save(tiny_benchmark(), path)
    assert len(load_benchmark(path)) == 12

    torch.save({"input_ids": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(BenchmarkDataError, match="cannot read benchmark file"):
        load_benchmark(tmp_path / "evil.pt")


def test_token_ids_outside_the_vocabulary_are_named_before_the_run():
    from deap_llmmerge import LLMMergeGA

    bench = tiny_benchmark()
    bench["input_ids"][0, 0] = 64
    with pytest.raises(BenchmarkDataError, match="token id 64 is outside the models' vocabulary of 64"):
        LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], bench, population_size=2, max_generations=0)


def _padded(sequences, side):
    length = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for i, seq in enumerate(sequences):
        where = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
        ids[i, where], labels[i, where], mask[i, where] = seq, seq, 1
        first = where.start
        labels[i, first] = -100  # the first token has nothing before it
    return BenchmarkData(ids, labels, mask)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_benchmarks_score_as_the_unpadded_sequences(arch, side):
    from deap_llmmerge import LLMMergeGA

    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(0, 64, (n,), generator=generator) for n in (6, 10, 8, 4)]
    model = tiny_model(arch, 3)
    want_correct, want_total, want_tokens = 0, 0.0, 0
    for seq in sequences:
        accuracy, loss = reference(model, seq[None], seq[None])
        want_correct += accuracy
        want_total += loss * (len(seq) - 1)
        want_tokens += len(seq) - 1
    data = _padded(sequences, side)
    ga = LLMMergeGA([model, tiny_model(arch, 4)], data, population_size=2, max_generations=0)
    accuracy, loss = ga.toolbox.evaluate(ga.toolbox.pure(source=0))
    assert accuracy == want_correct / len(sequences)
    assert math.isclose(loss, want_total / want_tokens, rel_tol=1e-5)
    assert ga.evaluate(model, data) == pytest.approx((accuracy, loss), rel=1e-6)


def test_int32_tensors_are_taken_as_token_ids():
    bench = tiny_benchmark()
    data = BenchmarkData(bench["input_ids"].int(), bench["labels"].int())
    assert data.input_ids.dtype == data.labels.dtype == torch.long
    model = tiny_model("llama", 0)
    metrics = (calculate_accuracy, calculate_loss)
    assert score(model, data, metrics, 4) == score(model, BenchmarkData(**bench), metrics, 4)


def test_evaluate_scores_a_model_in_training_mode_as_in_eval_mode_and_keeps_its_mode():
    from deap_llmmerge import LLMMergeGA

    model = tiny_model("gpt2", 1)  # dropout 0.1 everywhere
    ga = LLMMergeGA([model, tiny_model("gpt2", 2)], tiny_benchmark(), population_size=2, max_generations=0)
    expected = ga.evaluate(model)
    model.train()
    assert ga.evaluate(model) == expected and ga.evaluate_loss(model) == expected[1]
    assert model.training
