"""`deap-llmmerge run` / `export` as a user runs them: real processes, real files."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import tiny_benchmark
from safetensors.torch import load_file


def cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "deap_llmmerge.cli", "--quiet", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture
def config(tmp_path, saved_llamas):
    torch.save(tiny_benchmark(), tmp_path / "bench.pt")
    torch.save(tiny_benchmark(seed=1), tmp_path / "heldout.pt")
    content = {
        "models": [str(saved_llamas[0]), {"path": str(saved_llamas[1]), "name": "second"}],
        "benchmark": "bench.pt",
        "validation": "heldout.pt",
        "genome": "choice",
        "ga": {"population_size": 6, "max_generations": 3, "seed": 3},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def write(path, content):
    path.write_text(yaml.safe_dump(content))
    return path


def test_run_writes_best_model_recipe_and_logbook(config, tmp_path):
    result = cli("run", config, "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    recipe = json.loads((out / "recipe.json").read_text())
    assert set(recipe) >= {"genome", "plan", "sources", "fitness", "seed", "version"}
    assert recipe["seed"] == 3 and len(recipe["sources"]) == 2 and len(recipe["sources"][0]["sha256"]) == 64
    assert (out / "best" / "config.json").exists() and (out / "best" / "model.safetensors").exists()
    rows = (out / "logbook.csv").read_text().splitlines()
    assert rows[0].startswith("gen,evals,accuracy_max") and len(rows) == 1 + 4
    assert "best fitness" in result.stdout


def test_export_rebuilds_the_best_model(config, tmp_path):
    assert cli("run", config, "--output", tmp_path / "out").returncode == 0
    result = cli("export", tmp_path / "out" / "recipe.json", "--output", tmp_path / "exported")
    assert result.returncode == 0, result.stderr
    best = load_file(tmp_path / "out" / "best" / "model.safetensors")
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    assert best.keys() == exported.keys() and all(torch.equal(best[k], exported[k]) for k in best)


def _bad(tmp_path, config, change):
    content = yaml.safe_load(config.read_text())
    change(content, tmp_path)
    return write(tmp_path / "bad.yaml", content)


def _save(tmp_path, name, bench):
    torch.save(bench, tmp_path / name)
    return name


BAD_CONFIGS = {
    "unknown key": (lambda c, t: c.update(colour="red"), "config key 'colour': unknown key"),
    "unknown ga key": (lambda c, t: c["ga"].update(popsize=3), "config key 'ga.popsize': unknown key"),
    "rate above 1": (lambda c, t: c["ga"].update(mutation_rate=1.5), "config key 'ga.mutation_rate'"),
    "negative rate": (lambda c, t: c["ga"].update(crossover_rate=-0.1), "config key 'ga.crossover_rate'"),
    "population of 1": (lambda c, t: c["ga"].update(population_size=1), "config key 'ga.population_size'"),
    "wrong type": (lambda c, t: c["ga"].update(max_generations="many"), "config key 'ga.max_generations'"),
    "one model": (lambda c, t: c.update(models=c["models"][:1]), "config key 'models'"),
    "missing model": (lambda c, t: c["models"].append("nowhere"), "'models.2.path': file not found"),
    "missing benchmark": (lambda c, t: c.update(benchmark="nope.pt"), "'benchmark': file not found"),
    "unknown genome": (lambda c, t: c.update(genome="ties"), "unknown genome family 'ties'"),
    "cuda without cuda": (lambda c, t: c.update(device="cuda"), "CUDA is not available"),
    "labels shape": (lambda c, t: c.update(benchmark=_save(t, "b.pt", {**tiny_benchmark(), "labels":
                     tiny_benchmark()["labels"][:, :4]})), r"labels has shape \(12, 4\), input_ids has \(12, 10\)"),
    "no labeled position": (lambda c, t: c.update(benchmark=_save(t, "b.pt", {**tiny_benchmark(), "labels":
                            torch.full((12, 10), -100)})), "have no labeled position"),
    "not a benchmark": (lambda c, t: c.update(benchmark=_save(t, "b.pt", "hello")), "benchmark_data must be"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line_error_and_nothing_is_written(case, config, tmp_path):
    change, message = BAD_CONFIGS[case]
    bad = _bad(tmp_path, config, change)
    result = cli("run", bad, "--output", tmp_path / "out")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deap-llmmerge: error:"), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_existing_output_is_never_overwritten(config, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.json").write_text("mine")
    result = cli("run", config, "--output", out)
    assert result.returncode != 0 and "exists and is not empty" in result.stderr
    assert (out / "recipe.json").read_text() == "mine"


def test_missing_config_file(tmp_path):
    result = cli("run", tmp_path / "none.yaml")
    assert result.returncode != 0 and "config file not found" in result.stderr
