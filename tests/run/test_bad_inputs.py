"""Bad input of every kind: a non-zero exit, one line naming the problem, no traceback, nothing changed.

Every case runs the real command line in a subprocess against an output directory that already holds a
run's files (checkpoint.json and a note of the user's), and checks that not a byte of them changed.
"""

import hashlib
import json
import os
import re
import shutil

import pytest
import torch
import yaml
from conftest import cli, tiny_benchmark, tiny_model


@pytest.fixture(scope="module")
def finished(tmp_path_factory, saved_llamas):
    """A folder with models, data, a config, and a run whose checkpoint is there but whose outputs are not."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    for i, path in enumerate(saved_llamas):
        shutil.copytree(path, folder / f"model-{i}")
    torch.save(tiny_benchmark(), folder / "bench.pt")
    config = {"models": ["model-0", "model-1"], "benchmark": "bench.pt",
              "ga": {"population_size": 4, "max_generations": 1, "seed": 0}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli("run", folder / "config.yaml", "--output", folder / "run").returncode == 0
    for name in ("recipe.json", "logbook.csv"):
        (folder / "run" / name).unlink()
    shutil.rmtree(folder / "run" / "best")
    (folder / "run" / "notes.txt").write_text("the user's own file")
    return folder


@pytest.fixture
def work(finished, tmp_path):
    """A private copy of the finished folder for one case to spoil."""
    shutil.copytree(finished, tmp_path / "w")
    return tmp_path / "w"


def edit_config(work, change):
    content = yaml.safe_load((work / "config.yaml").read_text())
    change(content)
    (work / "bad.yaml").write_text(yaml.safe_dump(content))
    return ["run", work / "bad.yaml", "--output", work / "run", "--force"]


def with_benchmark(work, payload):
    torch.save(payload, work / "bad.pt")
    return edit_config(work, lambda c: c.update(benchmark="bad.pt"))


def with_validation(work, payload):
    torch.save(payload, work / "held.pt")
    return edit_config(work, lambda c: c.update(validation="held.pt"))


def out_of_vocabulary(bench, key="input_ids"):
    bench = {name: tensor.clone() for name, tensor in bench.items()}
    bench[key][2, 7] = 64
    return bench


HELD = []  # folder locks a case holds while its command runs


def held(work):
    from deap_llmmerge.run.lock import RunLock

    HELD.append(RunLock(work / "run").acquire())
    return ["run", work / "config.yaml", "--output", work / "run", "--resume"]


def resume(work):
    return ["run", work / "config.yaml", "--output", work / "run", "--resume"]


def spoil_weights(work, index):
    weights = work / f"model-{index}" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])


def with_options(work, options):
    """A methods run with ``method_options``, and a truncated model: the options are refused before any loading."""
    spoil_weights(work, 1)
    return edit_config(work, lambda c: c.update(genome="methods", method="dare_ties", method_options=options))


def relabel(bench, labels):
    return {**bench, "labels": labels}


class Payload:
    """Not a tensor: weights_only loading must refuse to build it."""


CASES = {
    # config
    "unknown key": (lambda w: edit_config(w, lambda c: c.update(colour="red")), "unknown key 'colour' \\(known: "),
    "misspelled key": (lambda w: edit_config(w, lambda c: c.update(benchmarks=c.pop("benchmark"))),
                       r"unknown key 'benchmarks' \(did you mean 'benchmark'\?\)"),
    "unknown ga key": (lambda w: edit_config(w, lambda c: c["ga"].update(popsize=3)),
                       r"unknown key 'ga.popsize' \(did you mean 'ga.population_size'\?\)"),
    "rate above 1": (lambda w: edit_config(w, lambda c: c["ga"].update(mutation_rate=1.5)),
                     "'ga.mutation_rate': Input should be less than or equal to 1"),
    "negative rate": (lambda w: edit_config(w, lambda c: c["ga"].update(crossover_rate=-0.1)),
                      "'ga.crossover_rate'"),
    "population of 1": (lambda w: edit_config(w, lambda c: c["ga"].update(population_size=1)),
                        "'ga.population_size': Input should be greater than or equal to 2"),
    "wrong type": (lambda w: edit_config(w, lambda c: c["ga"].update(max_generations="many")),
                   "'ga.max_generations'"),
    "one model": (lambda w: edit_config(w, lambda c: c.update(models=c["models"][:1])), "config key 'models'"),
    "missing model": (lambda w: edit_config(w, lambda c: c["models"].append("nowhere")),
                      "'models.2.path': file not found"),
    "missing benchmark": (lambda w: edit_config(w, lambda c: c.update(benchmark="nope.pt")),
                          "'benchmark': file not found"),
    "unknown genome": (lambda w: edit_config(w, lambda c: c.update(genome="ties")), "unknown genome family 'ties'"),
    "cuda without cuda": (lambda w: edit_config(w, lambda c: c.update(device="cuda")), "CUDA is not available"),
    "misspelled method option": (lambda w: with_options(w, {"dare_ties": {"normalise": True}}),
                                 r"'method_options.dare_ties': no option 'normalise' \(did you mean 'normalize'\?\)"),
    "method option of the wrong type": (lambda w: with_options(w, {"dare_ties": {"normalize": 1.5}}),
                                        "'method_options.dare_ties.normalize': expected true or false, got 1.5"),
    "misspelled method in options": (lambda w: with_options(w, {"dare-ties": {"normalize": True}}),
                                     r"unknown merge method 'dare-ties' \(did you mean 'dare_ties'\?\)"),
    "cmaes over layer choice": (lambda w: edit_config(w, lambda c: c.update(algorithm="cmaes")),
                                "algorithm cmaes needs a genome of bounded floats \\(blend, methods\\), not choice"),
    "not yaml": (lambda w: [(w / "bad.yaml").write_text("models: [a\n"), "run", w / "bad.yaml", "--output",
                            w / "run", "--force"][1:], "not valid YAML"),
    "not a mapping": (lambda w: [(w / "bad.yaml").write_text("- 1\n"), "run", w / "bad.yaml", "--output",
                                 w / "run", "--force"][1:], "expected a mapping of config keys"),
    "missing config": (lambda w: ["run", w / "none.yaml", "--output", w / "run"], "config file not found"),
    # benchmark files
    "labels shape": (lambda w: with_benchmark(w, relabel(tiny_benchmark(), tiny_benchmark()["labels"][:, :4])),
                     r"labels has shape \(12, 4\), input_ids has \(12, 10\)"),
    "no labeled position": (lambda w: with_benchmark(w, relabel(tiny_benchmark(), torch.full((12, 10), -100))),
                            "have no labeled position"),
    "not a benchmark": (lambda w: with_benchmark(w, "hello"), "benchmark_data must be"),
    "pickled object": (lambda w: with_benchmark(w, {"input_ids": Payload()}), "cannot read benchmark file"),
    "corrupt benchmark": (lambda w: [(w / "bench.pt").write_bytes(b"\x00garbage" * 9), "run", w / "config.yaml",
                                     "--output", w / "run", "--force"][1:], "cannot read benchmark file"),
    "benchmark token out of vocabulary": (lambda w: with_benchmark(w, out_of_vocabulary(tiny_benchmark())),
                                          "benchmark token id 64 is outside the models' vocabulary of 64"),
    "benchmark longer than the context": (lambda w: with_benchmark(w, tiny_benchmark(length=80)),
                                          "sequences of 80 tokens, longer than the models' context of 64"),
    # validation files: checked like the benchmark, before the first generation
    "validation token out of vocabulary": (lambda w: with_validation(w, out_of_vocabulary(tiny_benchmark())),
                                           "validation token id 64 is outside the models' vocabulary of 64"),
    "validation label out of vocabulary": (lambda w: with_validation(w, out_of_vocabulary(tiny_benchmark(), "labels")),
                                           "validation label 64 is outside the models' vocabulary of 64"),
    "validation without labels": (lambda w: with_validation(w, relabel(tiny_benchmark(), torch.full((12, 10), -100))),
                                  "held.pt: 12 sequence.s. have no labeled position"),
    "validation labels shape": (lambda w: with_validation(w, relabel(tiny_benchmark(), tiny_benchmark()["labels"][:3])),
                                r"held.pt: labels has shape \(3, 10\), input_ids has \(12, 10\)"),
    "validation float ids": (lambda w: with_validation(w, {**tiny_benchmark(),
                                                           "input_ids": tiny_benchmark()["input_ids"].float()}),
                             "held.pt: input_ids must hold integers, got torch.float32"),
    "missing validation": (lambda w: edit_config(w, lambda c: c.update(validation="gone.pt")),
                           "'validation': file not found"),
    # models
    "truncated weights": (lambda w: [spoil_weights(w, 1), "run", w / "config.yaml", "--output", w / "run",
                                     "--force"][1:], "truncated file"),
    "no model config": (lambda w: [(w / "model-0" / "config.json").unlink(), "run", w / "config.yaml",
                                   "--output", w / "run", "--force"][1:],
                            r"model-0 has no config.json: not a Hugging Face model folder"),
    "incompatible models": (lambda w: [shutil.rmtree(w / "model-1"),
                                       tiny_model("llama", 3, intermediate_size=48).save_pretrained(w / "model-1"),
                                       "run", w / "config.yaml", "--output", w / "run", "--force"][2:],
                            r"incompatible with source 0 .*: config field 'intermediate_size' is 48 vs 64"),
    # checkpoints
    "no checkpoint": (lambda w: [(w / "run" / "checkpoint.json").unlink(), *resume(w)][1:],
                      "no checkpoint to resume from"),
    "corrupt checkpoint": (lambda w: [(w / "run" / "checkpoint.json").write_text('{"format": 1, "sta'),
                                      *resume(w)][1:], "checkpoint.json is corrupt"),
    "foreign checkpoint": (lambda w: [(w / "run" / "checkpoint.json").write_text(json.dumps({"format": 7})),
                                      *resume(w)][1:], "not a deap-llmmerge checkpoint"),
    "changed config": (lambda w: [edit_config(w, lambda c: c["ga"].update(mutation_rate=0.2)),
                                  "run", w / "bad.yaml", "--output", w / "run", "--resume"][1:],
                       "config changed since the checkpoint: 'ga.mutation_rate' was 0.1, is now 0.2"),
    "changed source model": (lambda w: [tiny_model("llama", 9).save_pretrained(w / "model-1"), *resume(w)][1:],
                             "source model 1 changed since the checkpoint"),
    # command-line flags
    "zero workers": (lambda w: ["run", w / "config.yaml", "--output", w / "run", "--workers", 0],
                     "--workers must be >= 1, got 0"),
    "resume without output": (lambda w: ["run", w / "config.yaml", "--resume"], "--resume needs the --output"),
    "output is a file": (lambda w: ["run", w / "config.yaml", "--output", w / "run" / "notes.txt"],
                         "exists and is not a directory"),
    "output not empty": (lambda w: ["run", w / "config.yaml", "--output", w / "run"],
                         "exists and is not empty; it holds an unfinished run: --resume continues it"),
    "output in use by another run": (held, rf"run is in use by another run \(process {os.getpid()}\)"),
}


def snapshot(folder):
    return {str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, work):
    make_argv, message = CASES[case]
    argv = make_argv(work)
    before = snapshot(work / "run")
    try:
        result = cli(*argv)
    finally:
        while HELD:
            HELD.pop().release()
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deap-llmmerge: error:"), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert snapshot(work / "run") == before
