"""mergekit builds, from our mergekit.yaml, the tensors we built (within 1e-5).

mergekit runs in its own virtual environment (``.cache/mergekit-venv``: torch and mergekit 0.1.5 from the
package registry, never in the project's venv). When it cannot be installed the test is skipped and says why.
"""

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_benchmark, tiny_model
from safetensors.torch import load_file, save_file

from deap_llmmerge import make_toolbox
from deap_llmmerge.cli import main as cli_main
from deap_llmmerge.mergekit_config import mergekit_config

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "mergekit-venv"
DRIVER = Path(__file__).parent / "helpers" / "mergekit_driver.py"
CASES = {
    "choice": {"genome": "choice"},
    "blend": {"genome": "blend"},
    "slerp": {"genome": "methods", "method": "slerp"},
    "task_arithmetic": {"genome": "methods", "method": "task_arithmetic"},
    "ties": {"genome": "methods", "method": "ties"},
    "stack": {"genome": "stack", "depth": {"min": 2, "max": 5}},
}


@pytest.fixture(scope="module")
def mergekit_python():
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        steps = [[sys.executable, "-m", "venv", str(VENV)],
                 [str(python), "-m", "pip", "install", "-q", "torch==2.13.0"],
                 [str(python), "-m", "pip", "install", "-q", "mergekit==0.1.5"]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"mergekit cannot be installed here ({' '.join(step[-2:])}: {reason})")
        (VENV / ".installed").touch()
    return python


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Per case: our model from a search (its best/) and from a random genome, with their mergekit.yaml."""
    folder = tmp_path_factory.mktemp("interop")
    models = []
    for seed in (1, 2):
        tiny_model("llama", seed).save_pretrained(folder / f"m{seed}")
        models.append(str(folder / f"m{seed}"))
    torch.save(tiny_benchmark(), folder / "bench.pt")
    pairs = []
    for name, settings in CASES.items():
        config = {"models": models, "benchmark": "bench.pt", **settings,
                  "ga": {"population_size": 6, "max_generations": 2, "seed": 1}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
        assert cli_main(["--quiet", "run", str(folder / f"{name}.yaml"), "--output", str(folder / name)]) == 0
        pairs.append((folder / name / "mergekit.yaml", folder / name / "best"))

        options = {key: value for key, value in settings.items() if key != "genome"}
        if "depth" in options:
            options["depth"] = (options["depth"]["min"], options["depth"]["max"])
        toolbox = make_toolbox(models, tiny_benchmark(), settings["genome"], **options)
        random.seed(3)
        evaluator = toolbox.evaluate.func
        genome = toolbox.individual()
        plan = evaluator.decode(genome)
        assert any(step.method != "take" for _, step in plan.parts) or settings["genome"] in ("choice", "stack")
        random_dir = folder / f"{name}-random"
        random_dir.mkdir()
        (random_dir / "mergekit.yaml").write_text(
            mergekit_config(plan, models, [3, 3], 2, evaluator.state.pool.base_index))
        model = evaluator.merged_model(genome)
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  random_dir / "model.safetensors")
        pairs.append((random_dir / "mergekit.yaml", random_dir))
    return pairs


def test_mergekit_builds_the_same_tensors(mergekit_python, built, tmp_path):
    arguments = []
    for i, (config, _) in enumerate(built):
        arguments += [str(config), str(tmp_path / f"out{i}")]
    done = subprocess.run([str(mergekit_python), str(DRIVER), *arguments], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for i, (config, ours_dir) in enumerate(built):
        ours, theirs = _tensors(ours_dir), _tensors(tmp_path / f"out{i}")
        assert ours.keys() == theirs.keys(), config
        for name in ours:
            torch.testing.assert_close(theirs[name].float(), ours[name].float(), atol=1e-5, rtol=1e-5,
                                       msg=f"{config}: {name}")
        assert yaml.safe_load(config.read_text())["merge_method"]
