"""Benchmark kinds built from users' files: metrics against a plain reference, bad files named by row."""

import json
import math

import pytest
import torch
from conftest import cli, tiny_model, tiny_tokenizer

from deap_llmmerge import BenchmarkData, BenchmarkDataError, LLMMergeGA, build_benchmark
from deap_llmmerge.scoring.benchmark_files import continuation_ids
from deap_llmmerge.scoring.metrics import benchmark_metrics

MC = [
    {"context": "the sky is", "choices": ["blue", "green", "loud"], "answer": 0},
    {"context": "one, two,", "choices": ["three", "six"], "answer": 0},
    {"context": "cats say ", "choices": ["meow", "moo", "oink", "baa"], "answer": 2},
    {"context": "water is", "choices": ["wet", "dry"], "answer": 1},
]
COMPLETION = [{"prompt": "2 + 2 =", "answer": "4"}, {"prompt": "abc", "answer": "def"},
              {"prompt": "say hi: ", "answer": "hi there"}]
TEXT = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer " * 3


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def log_likelihood(model, context, continuation):
    """Sum of log p(continuation token | everything before it), and the greedy match, one sequence."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    total, greedy = 0.0, True
    for j, token in enumerate(continuation):
        position = len(context) + j - 1
        total += float(log_probs[position, token])
        greedy &= int(log_probs[position].argmax()) == token
    return total, greedy


def test_multiple_choice_metrics_match_the_reference(tmp_path):
    tokenizer, model = tiny_tokenizer(), tiny_model("llama", 5)
    data = build_benchmark("multiple_choice", write_jsonl(tmp_path / "mc.jsonl", MC), tokenizer)
    assert data.kind == "multiple_choice" and len(data) == sum(len(item["choices"]) for item in MC)
    right, nll, tokens, choice_nll = 0, 0.0, 0, 0.0
    for item in MC:
        scores = []
        for j, choice in enumerate(item["choices"]):
            context, continuation = continuation_ids(tokenizer, item["context"], choice)
            ll, _ = log_likelihood(model, context, continuation)
            scores.append(ll / len(choice))
            if j == item["answer"]:
                nll -= ll
                tokens += len(continuation)
        right += max(range(len(scores)), key=lambda j: scores[j]) == item["answer"]
        # the correct choice's share of exp(normalised log-likelihood) over the item's choices
        choice_nll -= math.log(math.exp(scores[item["answer"]]) / sum(math.exp(s) for s in scores))
    metrics = benchmark_metrics(model, data, batch_size=3)
    assert metrics["accuracy"] == right / len(MC)
    assert math.isclose(metrics["loss"], nll / tokens, rel_tol=1e-5)
    assert math.isclose(metrics["choice_loss"], choice_nll / len(MC), rel_tol=1e-5)


def test_choices_of_one_item_stay_in_one_batch(tmp_path):
    data = build_benchmark("multiple_choice", write_jsonl(tmp_path / "mc.jsonl", MC), tiny_tokenizer())
    batches = data.batch_rows(2)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(data)))
    for rows in batches:  # whole items only
        assert all(int((data.item == item).sum()) == int((data.item[rows] == item).sum()) for item in data.item[rows])


def test_completion_metrics_match_the_reference(tmp_path):
    tokenizer, model = tiny_tokenizer(), tiny_model("qwen2", 5)
    data = build_benchmark("completion", write_jsonl(tmp_path / "c.jsonl", COMPLETION), tokenizer)
    right, nll, tokens = 0, 0.0, 0
    for row in COMPLETION:
        context, continuation = continuation_ids(tokenizer, row["prompt"], row["answer"])
        ll, greedy = log_likelihood(model, context, continuation)
        right += greedy
        nll -= ll
        tokens += len(continuation)
    metrics = benchmark_metrics(model, data, batch_size=2)
    assert metrics["accuracy"] == right / len(COMPLETION)
    assert math.isclose(metrics["loss"], nll / tokens, rel_tol=1e-5)


def test_text_windows_are_fully_labeled_and_scored_next_token(tmp_path):
    tokenizer, model = tiny_tokenizer(), tiny_model("gpt2", 5)
    (tmp_path / "play.txt").write_text(TEXT)
    data = build_benchmark("text", tmp_path / "play.txt", tokenizer, window=32)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert data.input_ids.shape == (len(ids) // 32, 32) and data.num_labeled == data.input_ids.numel() - len(data)
    right, nll, tokens = 0, 0.0, 0
    with torch.no_grad():
        for row in data.input_ids:
            log_probs = torch.log_softmax(model(input_ids=row[None]).logits[0].double(), dim=-1)
            for t in range(len(row) - 1):
                nll -= float(log_probs[t, row[t + 1]])
                right += int(log_probs[t].argmax()) == int(row[t + 1])
                tokens += 1
    metrics = benchmark_metrics(model, data, batch_size=4)
    assert math.isclose(metrics["accuracy"], right / tokens)
    assert math.isclose(metrics["loss"], nll / tokens, rel_tol=1e-5)
    assert math.isclose(metrics["perplexity"], math.exp(nll / tokens), rel_tol=1e-5)
    rows = write_jsonl(tmp_path / "play.jsonl", [{"text": TEXT[:100]}, {"text": TEXT[100:]}])
    assert build_benchmark("text", rows, tokenizer, window=16).kind == "text"


def test_a_continuation_follows_its_prompt_after_one_space_unless_the_prompt_ends_in_whitespace():
    tokenizer = tiny_tokenizer()
    assert continuation_ids(tokenizer, "Answer:", "yes")[1] == tokenizer(" yes")["input_ids"]
    assert continuation_ids(tokenizer, "Answer: ", "yes")[1] == tokenizer("yes")["input_ids"]
    assert continuation_ids(tokenizer, "Answer:\n", "yes")[1] == tokenizer("yes")["input_ids"]


def test_named_benchmarks_of_several_kinds_score_together(tmp_path):
    tokenizer = tiny_tokenizer()
    (tmp_path / "play.txt").write_text(TEXT)
    benchmarks = {"qa": build_benchmark("multiple_choice", write_jsonl(tmp_path / "mc.jsonl", MC), tokenizer),
                  "play": build_benchmark("text", tmp_path / "play.txt", tokenizer, window=32)}
    ga = LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], benchmarks, population_size=4,
                    max_generations=1, objectives=["qa.accuracy", "play.loss"], selection="nsga2")
    best = ga.run()
    assert ga.objectives == ("qa.accuracy", "play.loss") and len(best.fitness.values) == 2


def test_every_kind_measures_exactly_the_metrics_objectives_are_checked_against(tmp_path):
    from deap_llmmerge.scoring.metrics import KIND_METRIC_NAMES

    tokenizer, model = tiny_tokenizer(), tiny_model("llama", 3)
    (tmp_path / "play.txt").write_text(TEXT)
    ids = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(0))
    built = {"tensors": BenchmarkData(input_ids=ids, labels=ids.clone()),
             "completion": build_benchmark("completion", write_jsonl(tmp_path / "c.jsonl", COMPLETION), tokenizer),
             "multiple_choice": build_benchmark("multiple_choice", write_jsonl(tmp_path / "mc.jsonl", MC), tokenizer),
             "text": build_benchmark("text", tmp_path / "play.txt", tokenizer, window=32)}
    assert set(built) == set(KIND_METRIC_NAMES)
    for kind, data in built.items():
        assert tuple(benchmark_metrics(model, data, batch_size=4)) == KIND_METRIC_NAMES[kind], kind


@pytest.mark.slow  # starts processes
def test_data_build_writes_tensors_the_config_can_name(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    write_jsonl(tmp_path / "mc.jsonl", MC)
    result = cli("data", "build", "multiple_choice", tmp_path / "mc.jsonl", "--tokenizer", tmp_path / "tok",
                 "--output", tmp_path / "mc.pt")
    assert result.returncode == 0, result.stderr
    assert "11 rows" in result.stdout
    saved = torch.load(tmp_path / "mc.pt", weights_only=True)
    direct = build_benchmark("multiple_choice", tmp_path / "mc.jsonl", tokenizer)
    assert saved["kind"] == "multiple_choice" and torch.equal(saved["input_ids"], direct.input_ids)
    assert BenchmarkData.coerce(saved).num_labeled == direct.num_labeled
    again = cli("data", "build", "multiple_choice", tmp_path / "mc.jsonl", "--tokenizer", tmp_path / "tok",
                "--output", tmp_path / "mc.pt")
    assert again.returncode == 1 and "already exists" in again.stderr


BAD_ROWS = {
    "missing key": ('{"context": "a", "choices": ["b"]}', "row 1: missing key 'answer'"),
    "answer out of range": ('{"context": "a", "choices": ["b", "c"], "answer": 2}',
                            "row 1: answer 2 is out of range for 2 choices"),
    "empty choices": ('{"context": "a", "choices": [], "answer": 0}', "row 1: empty choices"),
    "wrong type": ('{"context": 3, "choices": ["b"], "answer": 0}', "row 1: 'context' must be str, got int"),
    "answer neither choice nor letter": ('{"context": "a", "choices": ["b"], "answer": "zero"}',
                                         "row 1: answer 'zero' is neither a choice, a letter nor an index"),
    "empty choice": ('{"context": "a", "choices": ["b", ""], "answer": 0}', "row 1: choice 1 must be a non-empty"),
    "not json": ('{"context": "a", "choices"', "row 1: not JSON"),
    "not an object": ('["a", "b"]', "row 1: expected a JSON object, got list"),
    "second row": ('{"context": "a", "choices": ["b"], "answer": 0}\n{"context": "a"}', "row 2: missing key"),
    "no rows": ("\n\n", "no rows"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_multiple_choice_files_are_one_line_naming_file_and_row(tmp_path, case):
    content, message = BAD_ROWS[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BenchmarkDataError, match=message) as error:
        build_benchmark("multiple_choice", path, tiny_tokenizer())
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("kind", "content", "message"), [
    ("completion", '{"prompt": "a"}', "row 1: missing key 'answer'"),
    ("completion", '{"prompt": "a", "answer": ""}', "row 1: empty answer"),
    ("completion", '{"prompt": "a", "answer": 4}', "row 1: 'answer' must be str, got int"),
    ("text", '{"txt": "a"}', "row 1: missing key 'text'"),
])
def test_bad_completion_and_text_rows_are_named(tmp_path, kind, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BenchmarkDataError, match=message):
        build_benchmark(kind, path, tiny_tokenizer())


def test_non_utf8_files_are_named(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"prompt": "caf\u00e9", "answer": "x"}'.encode("latin-1"))
    with pytest.raises(BenchmarkDataError, match=r"latin.jsonl: not UTF-8 text \(byte 0xe9 at offset 15\)"):
        build_benchmark("completion", path, tiny_tokenizer())
    (tmp_path / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(BenchmarkDataError, match="not UTF-8"):
        build_benchmark("text", tmp_path / "latin.txt", tiny_tokenizer())


def qa_and_play_config(tmp_path, saved_llamas, objectives):
    """A run config over a multiple-choice file and a text file (both written to ``tmp_path``)."""
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    write_jsonl(tmp_path / "mc.jsonl", MC)
    (tmp_path / "play.txt").write_text(TEXT)
    return {"models": [str(p) for p in saved_llamas], "tokenizer": "tok",
            "benchmark": {"qa": {"path": "mc.jsonl", "kind": "multiple_choice"},
                          "play": {"path": "play.txt", "window": 32}},
            "objectives": objectives, "ga": {"population_size": 4, "max_generations": 1}}


@pytest.mark.slow  # starts processes
def test_a_config_names_jsonl_and_text_benchmarks_directly(tmp_path, saved_llamas):
    import yaml

    config = {**qa_and_play_config(tmp_path, saved_llamas, ["qa.accuracy", "qa.choice_loss", "play.loss"]),
              "validation": {"qa": {"path": "mc.jsonl", "kind": "multiple_choice", "max_items": 2}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", tmp_path / "c.yaml", "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert recipe["objectives"] == ["qa.accuracy", "qa.choice_loss", "play.loss"]
    assert set(recipe["validation"]) == {"qa"}
    assert len(recipe["fitness"]) == 3 and recipe["fitness"][1] > 0
    missing_kind = {**config, "benchmark": {"qa": {"path": "mc.jsonl"}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(missing_kind))
    refused = cli("run", tmp_path / "bad.yaml", "--output", tmp_path / "out2")
    assert refused.returncode == 1 and "say which kind mc.jsonl holds" in refused.stderr


@pytest.mark.parametrize(("objective", "message"), [
    ("play.choice_loss", "objective 'play.choice_loss': benchmark 'play' does not measure 'choice_loss'; "
                         "it measures accuracy, loss, perplexity"),
    ("qa.perplexity", "objective 'qa.perplexity': benchmark 'qa' does not measure 'perplexity'; "
                      "it measures accuracy, loss, choice_loss"),
])
@pytest.mark.slow  # starts processes
def test_an_objective_the_benchmark_kind_does_not_measure_is_refused_before_the_run(tmp_path, saved_llamas,
                                                                                      objective, message):
    import yaml

    config = qa_and_play_config(tmp_path, saved_llamas, ["qa.accuracy", objective])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    refused = cli("run", tmp_path / "c.yaml", "--output", tmp_path / "out")
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [f"deap-llmmerge: error: {message}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # starts processes
def test_a_missing_tokenizer_is_one_line_naming_the_folder_and_the_key(tmp_path, saved_llamas):
    import yaml

    config = qa_and_play_config(tmp_path, saved_llamas, ["qa.accuracy", "play.loss"])
    del config["tokenizer"]  # the default: the first source's folder, which has no tokenizer files
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", tmp_path / "c.yaml", "--output", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot load a tokenizer from {saved_llamas[0]}: the folder has no tokenizer files" in result.stderr
    assert "`tokenizer:` in a run config" in result.stderr
    assert not (tmp_path / "out" / "recipe.json").exists()
    write_jsonl(tmp_path / "mc.jsonl", MC)
    nowhere = cli("data", "build", "multiple_choice", tmp_path / "mc.jsonl", "--tokenizer", tmp_path / "nowhere",
                  "--output", tmp_path / "mc.pt")
    assert nowhere.returncode == 1
    missing = f"cannot load a tokenizer from {tmp_path / 'nowhere'}: no such file or folder"
    assert nowhere.stderr.strip().endswith(missing)
    assert not (tmp_path / "mc.pt").exists()


@pytest.mark.parametrize("answer", [1, "no", "B", "b", "1"])
def test_a_multiple_choice_answer_may_be_an_index_the_choices_text_or_a_letter(tmp_path, answer):
    rows = [{"question": "is it?", "endings": ["yes", "no", "maybe"], "label": answer}]
    path = write_jsonl(tmp_path / "mc.jsonl", rows)
    data = build_benchmark("multiple_choice", path, tiny_tokenizer(),
                           fields={"context": "question", "choices": "endings", "answer": "label"})
    assert data.correct.tolist() == [False, True, False]


@pytest.mark.parametrize(("answer", "message"), [("D", "answer 3 is out of range for 3 choices"),
                                                 ("perhaps", "answer 'perhaps' is neither a choice, a letter"),
                                                 (True, "answer must be an index, a choice or a letter")])
def test_a_bad_answer_is_named_with_its_row(tmp_path, answer, message):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"context": "is it?", "choices": ["yes", "no", "maybe"],
                                                "answer": answer}])
    with pytest.raises(BenchmarkDataError, match=f"mc.jsonl row 1: {message}"):
        build_benchmark("multiple_choice", path, tiny_tokenizer())
