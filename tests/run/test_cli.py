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


def strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not standard JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_export_works_from_another_directory_with_relative_paths(tmp_path, saved_llamas):
    import shutil
    import subprocess
    import sys

    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    for i, path in enumerate(saved_llamas):
        shutil.copytree(path, work / "models" / f"m{i}")
    torch.save(tiny_benchmark(), work / "bench.pt")
    write(work / "config.yaml", {"models": ["models/m0", "models/m1"], "benchmark": "bench.pt",
                                 "ga": {"population_size": 4, "max_generations": 1}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "deap_llmmerge", "-q", "run", "config.yaml", "--output", "out"],
                         cwd=work, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exported = subprocess.run([sys.executable, "-m", "deap_llmmerge", "-q", "export", str(work / "out"),
                               "--output", "model"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert exported.returncode == 0, exported.stderr
    best = load_file(work / "out" / "best" / "model.safetensors")
    again = load_file(elsewhere / "model" / "model.safetensors")
    assert all(torch.equal(best[k], again[k]) for k in best)


def test_force_starts_afresh_and_keeps_the_users_own_files(config, tmp_path):
    out = tmp_path / "out"
    assert cli("run", config, "--output", out).returncode == 0
    (out / "notes.txt").write_text("mine")
    (out / "report").mkdir()
    changed = yaml.safe_load(config.read_text())
    changed["ga"]["max_generations"] = 50
    changed["benchmark"] = str(tmp_path / "bench.pt")
    changed["validation"] = str(tmp_path / "heldout.pt")
    write(tmp_path / "long.yaml", changed)
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "-q", "run", str(tmp_path / "long.yaml"),
                                "--output", str(out), "--force"], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / "checkpoint.json").exists() or (out / "recipe.json").exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "recipe.json").exists() and not (out / "best").exists() and not (out / "report").exists()
    assert (out / "notes.txt").read_text() == "mine"
    resumed = cli("run", tmp_path / "long.yaml", "--output", out, "--resume")
    assert "already finished" not in resumed.stderr


def test_recipe_and_checkpoint_are_standard_json_with_absolute_source_paths(tmp_path, saved_llamas):
    torch.save(tiny_benchmark(), tmp_path / "bench.pt")
    write(tmp_path / "c.yaml", {"models": [str(p) for p in saved_llamas], "benchmark": "bench.pt",
                                "genome": "methods", "method": "linear", "ga": {"population_size": 6,
                                                                                "max_generations": 2}})
    assert cli("run", tmp_path / "c.yaml", "--output", tmp_path / "out").returncode == 0
    recipe = strict_json(tmp_path / "out" / "recipe.json")
    checkpoint = strict_json(tmp_path / "out" / "checkpoint.json")
    assert recipe["sources"][0]["path"] == str(saved_llamas[0].absolute())
    assert checkpoint["state"]["cache"]
