"""A model's own code (``auto_map``) runs only when the user says so on the command line or in their own
config, never because a shared recipe says ``trust_remote_code: true``."""

import json
import shutil

import pytest
from conftest import cli, tiny_model, write_run_config

CODE = '''
import os
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

if os.environ.get("CUSTOM_CODE_MARKER"):
    with open(os.environ["CUSTOM_CODE_MARKER"], "a") as marker:
        marker.write("ran\\n")


class ShoutConfig(LlamaConfig):
    model_type = "shout-llama"


class ShoutForCausalLM(LlamaForCausalLM):
    config_class = ShoutConfig
'''


def custom_model(folder, seed):
    """A tiny Llama saved as a model with its own code: a config and model class in ``shout.py``."""
    tiny_model("llama", seed).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="shout-llama", architectures=["ShoutForCausalLM"],
                  auto_map={"AutoConfig": "shout.ShoutConfig", "AutoModelForCausalLM": "shout.ShoutForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "shout.py").write_text(CODE)
    return folder


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """A run folder as someone shares it: its recipe says trust_remote_code and names its models relatively."""
    folder = tmp_path_factory.mktemp("remote")
    models = [custom_model(folder / f"m{seed}", seed) for seed in (1, 2)]
    config = write_run_config(folder, [m.name for m in models], trust_remote_code=True,
                              ga={"population_size": 4, "max_generations": 1})
    env = {"HF_MODULES_CACHE": str(folder / "modules"), "CUSTOM_CODE_MARKER": str(folder / "own-run")}
    result = cli("run", config, "--output", folder / "run", env=env)
    assert result.returncode == 0, result.stderr
    assert (folder / "own-run").exists()  # the user's own config key is their opt-in
    recipe = json.loads((folder / "run" / "recipe.json").read_text())
    for source in recipe["sources"]:
        source["path"] = f"../{source['path'].rsplit('/', 1)[-1]}"
    (folder / "run" / "recipe.json").write_text(json.dumps(recipe))
    return folder


@pytest.mark.slow  # starts processes
def test_export_never_runs_a_recipes_model_code_without_the_flag(shared_run):
    marker = shared_run / "export-marker"
    env = {"HF_MODULES_CACHE": str(shared_run / "modules"), "CUSTOM_CODE_MARKER": str(marker)}
    refused = cli("export", shared_run / "run", "--output", shared_run / "out", env=env)
    assert refused.returncode == 1 and not marker.exists() and not (shared_run / "out").exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "a recipe alone never runs" in lines[0] and "--trust-remote-code" in lines[0], lines
    done = cli("export", shared_run / "run", "--output", shared_run / "out", "--trust-remote-code", env=env)
    assert done.returncode == 0, done.stderr
    assert marker.exists() and (shared_run / "out" / "model.safetensors").exists()


@pytest.mark.slow  # starts processes
def test_run_takes_the_flag_as_opt_in_and_refuses_custom_code_in_one_line_without_it(shared_run):
    config = write_run_config(shared_run, ["m1", "m2"], "plain.yaml", ga={"population_size": 4, "max_generations": 1})
    marker = shared_run / "flag-marker"
    env = {"HF_MODULES_CACHE": str(shared_run / "modules"), "CUSTOM_CODE_MARKER": str(marker)}
    refused = cli("run", config, "--output", shared_run / "refused", env=env)
    assert refused.returncode == 1 and not marker.exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs its own code" in lines[0] and "--trust-remote-code" in lines[0], lines
    shutil.rmtree(shared_run / "refused", ignore_errors=True)
    done = cli("run", config, "--output", shared_run / "flagged", "--trust-remote-code", env=env)
    assert done.returncode == 0, done.stderr
    assert marker.exists()
