"""lm-evaluation-harness tasks as benchmarks: the same acc, acc_norm and per-choice log-likelihoods as lm-eval's
own simple_evaluate on a tiny model, and one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer

from deap_llmmerge import BenchmarkDataError
from deap_llmmerge.scoring.lm_eval_tasks import lm_eval_benchmark
from deap_llmmerge.scoring.metrics import benchmark_items

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install "
                              "'deap-llmmerge[lm-eval]'); its tasks cannot be checked here")

CHOICES = ["yes", "no way at all", "maybe so", "a"]


def _task(folder, name="tiny_mc", output_type="multiple_choice", items=40, extra=""):
    rows = [{"question": f"is {i} {'odd' if i % 3 else 'even'}?", "choices": CHOICES[:2 + i % 3], "answer": i % 2}
            for i in range(items)]
    (folder / "data.json").write_text("\n".join(json.dumps(row) for row in rows))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'data.json'}\n"
        f"test_split: test\noutput_type: {output_type}\ndoc_to_text: \"Q: {{{{question}}}}\\nA:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n" + extra)
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """lm-eval's own scores of a tiny model on a task over a local JSON file."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = _task(tmp_path_factory.mktemp("tasks"))
    model, tokenizer = tiny_model("llama", 1).eval(), tiny_tokenizer()
    found = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), tasks=["tiny_mc"],
                            task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                            log_samples=True, limit=30)
    return folder, model, tokenizer, found


@pytest.mark.parametrize(("normalization", "metric"), [("none", "acc,none"), ("chars", "acc_norm,none")])
def test_accuracy_equals_lm_evals_acc_and_acc_norm(evaluated, normalization, metric):
    folder, model, tokenizer, found = evaluated
    data = lm_eval_benchmark("tiny_mc", tokenizer, include_path=folder, limit=30, normalization=normalization)
    assert int(data.item.max()) + 1 == 30
    assert benchmark_items(model, data, 8)[0]["accuracy"] == pytest.approx(found["results"]["tiny_mc"][metric])


def test_every_choice_has_lm_evals_log_likelihood(evaluated):
    folder, model, tokenizer, found = evaluated
    data = lm_eval_benchmark("tiny_mc", tokenizer, include_path=folder, limit=30)
    with torch.no_grad():
        logits = model(input_ids=data.input_ids, attention_mask=data.attention_mask).logits.log_softmax(-1)
    labels = data.labels[:, 1:]
    picked = logits[:, :-1].gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ours = (picked * (labels != -100)).sum(dim=1)
    theirs = [response[0][0] for sample in sorted(found["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
              for response in sample["resps"]]
    assert len(theirs) == len(ours)
    assert torch.allclose(ours, torch.tensor(theirs, dtype=ours.dtype), atol=1e-4)


def test_a_run_config_takes_an_lm_eval_task(tmp_path):
    from deap_llmmerge.run.config import BenchmarkEntry
    from deap_llmmerge.run.runner import load_benchmarks

    folder = _task(tmp_path)
    tiny_model("llama", 1).save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    entry = BenchmarkEntry(lm_eval="tiny_mc", include_path=folder, limit=5, normalization="none")
    data = load_benchmarks({"qa": entry}, tmp_path / "model")["qa"]
    assert data.kind == "multiple_choice" and int(data.item.max()) + 1 == 5


def test_generation_tasks_groups_and_bad_settings_are_refused_in_one_line(tmp_path):
    tokenizer = tiny_tokenizer()
    _task(tmp_path, "tiny_gen", "generate_until", extra="generation_kwargs:\n  until: [\"\\n\"]\n")
    with pytest.raises(BenchmarkDataError, match="output type 'generate_until'; only multiple_choice and "
                                                 "loglikelihood tasks"):
        lm_eval_benchmark("tiny_gen", tokenizer, include_path=tmp_path)
    (tmp_path / "mc").mkdir()
    _task(tmp_path / "mc")
    with pytest.raises(BenchmarkDataError, match="include_path .* is not a folder"):
        lm_eval_benchmark("tiny_mc", tokenizer, include_path=tmp_path / "nowhere")
    with pytest.raises(BenchmarkDataError, match="has no split 'validation'") as error:
        lm_eval_benchmark("tiny_mc", tokenizer, include_path=tmp_path / "mc", split="validation")
    assert "\n" not in str(error.value)


def test_an_entry_is_a_file_or_a_task_not_both():
    from deap_llmmerge.run.config import BenchmarkEntry

    with pytest.raises(ValueError, match="either path .* or lm_eval"):
        BenchmarkEntry(path="qa.jsonl", lm_eval="arc_easy", kind="multiple_choice")
    with pytest.raises(ValueError, match="split applies to lm_eval tasks only"):
        BenchmarkEntry(path="qa.jsonl", kind="multiple_choice", split="test")
