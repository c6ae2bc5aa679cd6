"""The demo's building blocks, at a size CI affords (`make demo` runs them at full size)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))

from experts import LETTERS, TOKEN, VOCAB, build_experts, mixed_benchmark  # noqa: E402

from deap_llmmerge import BenchmarkData, LLMMergeGA  # noqa: E402


def test_mixed_benchmark_labels_only_the_answers():
    bench = mixed_benchmark(5, seed=0)
    data = BenchmarkData(**bench)
    assert len(data) == 10 and data.num_labeled == 10 * 6
    first = [VOCAB[i] for i in bench["input_ids"][0]]
    word, answer = first[2:8], first[9:]
    assert first[:2] == ["<bos>", "R"] and first[8] == "="
    assert answer == [LETTERS[(LETTERS.index(c) + 1) % 10] for c in word]
    assert (bench["labels"][0, :9] == -100).all() and bench["labels"][0, 9] == TOKEN[answer[0]]


def test_experts_share_the_base_outside_their_trained_layers(tmp_path, capsys):
    paths = build_experts(tmp_path, base_steps=3, expert_steps=2)
    said = capsys.readouterr().out  # the demo's first, longest step says what it does
    assert said.startswith("training a base that copies strings (3 steps), then two experts") and \
        "letters-expert: layers 0-2 learn to shift" in said
    assert build_experts(tmp_path) == paths and capsys.readouterr().out == ""  # cached: no training again
    ga = LLMMergeGA([paths["letters-expert"], paths["digits-expert"]], mixed_benchmark(4, seed=1),
                    population_size=4, max_generations=1)
    letters, digits = ga.pool.tensors
    for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.4.mlp.up_proj.weight"):
        assert not torch.equal(letters[name], digits[name]), name
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(letters[name], digits[name]), name
    assert ga.run().fitness.valid
