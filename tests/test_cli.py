"""`deap-llmmerge run` / `export` as a user runs them: real processes, real files."""

import json
import os

import pytest
import torch
import yaml
from conftest import cli, tiny_benchmark
from safetensors.torch import load_file


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
    umask = os.umask(0)
    os.umask(umask)
    for path in (out / "recipe.json", out / "logbook.csv", out / "best", out / "best" / "config.json"):
        default = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == default, path


def test_export_rebuilds_the_best_model(config, tmp_path):
    assert cli("run", config, "--output", tmp_path / "out").returncode == 0
    result = cli("export", tmp_path / "out" / "recipe.json", "--output", tmp_path / "exported")
    assert result.returncode == 0, result.stderr
    best = load_file(tmp_path / "out" / "best" / "model.safetensors")
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    assert best.keys() == exported.keys() and all(torch.equal(best[k], exported[k]) for k in best)


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
