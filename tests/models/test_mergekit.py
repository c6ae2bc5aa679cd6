"""mergekit builds, from our mergekit.yaml, the tensors we built (within 1e-5).

mergekit runs in its own virtual environment (``.cache/mergekit-venv``: torch and mergekit 0.1.5 from the
package registry, never in the project's venv). When it cannot be installed the test is skipped and says why.
"""

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HELPERS, ROOT, tiny_benchmark, tiny_model
from safetensors.torch import load_file, save_file

from deap_llmmerge import make_toolbox
from deap_llmmerge.methods import MERGE_METHODS
from deap_llmmerge.models.mergekit_yaml import mergekit_config
from deap_llmmerge.models.plans import MergePlan
from deap_llmmerge.run.cli import main as cli_main

VENV = ROOT / ".cache" / "mergekit-venv"
DRIVER = HELPERS / "mergekit_driver.py"
CASES = {
    "choice": {"genome": "choice"},
    "blend": {"genome": "blend"},
    "slerp": {"genome": "methods", "method": "slerp"},
    "task_arithmetic": {"genome": "methods", "method": "task_arithmetic"},
    "ties": {"genome": "methods", "method": "ties"},
    "stack": {"genome": "stack", "depth": {"min": 2, "max": 5}},
    "search": {"genome": "methods", "method": "search", "base": "m0"},
    "ties-lambda": {"genome": "methods", "method": "ties", "method_options": {"ties": {"lambda": 0.5}}},
    "nuslerp": {"genome": "methods", "method": "nuslerp"},
    "multislerp": {"genome": "methods", "method": "multislerp"},
}
# Genomes written by hand, per group of genes (method index first with method: search): takes under a method
# with other options than a take's, and parameters mergekit checks for itself.
LINEAR_TAKE, MODEL_STOCK = [0, 1.0, 0.0], [1, 0.5, 0.5]  # search over linear, model_stock (weight genes)
CRAFTED = {
    "takes-under-lambda": ({"genome": "methods", "method": "search", "search_methods": ["linear", "ties"],
                            "method_options": {"ties": {"lambda": 0.5}}, "base": "m0"},
                           lambda group, last: [0, 0.0, 1.0, 1.0, 1.0] if group in (0, last) else
                           [1, 0.7, 0.5, 0.4, 0.6]),
    "takes-under-model-stock": ({"genome": "methods", "method": "search", "search_methods": ["linear", "model_stock"],
                                 "base": "m0"},
                                lambda group, last: LINEAR_TAKE if group == 0 else MODEL_STOCK),
    "della-density-below-epsilon": ({"genome": "methods", "method": "della", "base": "m0"},
                                    lambda group, last: [0.8, 0.1, 0.3, 0.6, 0.12, 0.2]),
    # genes: method, select_topk, weight 0, weight 1 (a take of source 1, noted, then sce merges)
    "sce-and-takes": ({"genome": "methods", "method": "search", "search_methods": ["linear", "sce"], "base": "m0"},
                      lambda group, last: [0, 1.0, 0.0, 1.0] if group == 0 else [1, 0.3 if group == last else 1.0,
                                                                                  0.5, 0.5]),
    # genes: method, t, weight 0, weight 1 (the base is source 0: takes of source 1 and of the base)
    "nearswap-and-takes": ({"genome": "methods", "method": "search", "search_methods": ["linear", "nearswap"]},
                           lambda group, last: [0, 0.5, 0.0, 1.0] if group == 0 else [0, 0.5, 1.0, 0.0]
                           if group == last else [1, 0.05, 0.5, 0.5]),
    "takes-under-karcher": ({"genome": "methods", "method": "search", "search_methods": ["linear", "karcher"]},
                            lambda group, last: [0, 1.0, 0.0] if group == 0 else [1, 0.5, 0.5]),
}


def noted_parts(config: str) -> set[str]:
    """The parts a mergekit.yaml says mergekit builds otherwise (its ``# NOTE: parts ...`` lines)."""
    noted = set()
    for line in config.splitlines():
        found = re.match(r"# NOTE: parts (.+?) (?:use|take) ", line)
        if found:
            noted |= set(found.group(1).split(", "))
    return noted


def part_of(tensor: str) -> str:
    if tensor.startswith("model.layers."):
        return "layers." + tensor.split(".")[2]
    return "embed" if "embed_tokens" in tensor else "head"


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
    for seed in (0, 1, 2):
        tiny_model("llama", seed).save_pretrained(folder / f"m{seed}")
        models.append(str(folder / f"m{seed}"))
    torch.save(tiny_benchmark(), folder / "bench.pt")
    pairs = []

    def toolbox_of(settings):
        options = {key: value for key, value in settings.items() if key not in ("genome", "base")}
        if "depth" in options:
            options["depth"] = (options["depth"]["min"], options["depth"]["max"])
        base = models[0] if "base" in settings else None
        return make_toolbox(models[1:], tiny_benchmark(), settings["genome"], base_model=base, **options)

    def keep(name, toolbox, genome, settings):
        """Our model of ``genome`` and the mergekit.yaml a run writes for it."""
        evaluator = toolbox.evaluate.func
        plan = evaluator.decode(genome)
        pool = evaluator.state.pool
        paths = models[1:] + ([models[0]] if "base" in settings else [])
        out = folder / name
        out.mkdir()
        (out / "mergekit.yaml").write_text(mergekit_config(plan, paths, [3] * len(paths), 2, pool.base_index,
                                                           settings.get("method_options")))
        model = evaluator.merged_model(genome)
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                  out / "model.safetensors")
        pairs.append((out / "mergekit.yaml", out, plan))

    for name, settings in CASES.items():
        config = {"models": models[1:], "benchmark": "bench.pt", **settings,
                  "ga": {"population_size": 6, "max_generations": 2, "seed": 1}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
        assert cli_main(["--quiet", "run", str(folder / f"{name}.yaml"), "--output", str(folder / name)]) == 0
        recipe = json.loads((folder / name / "recipe.json").read_text())
        pairs.append((folder / name / "mergekit.yaml", folder / name / "best", MergePlan.from_dict(recipe["plan"])))

        toolbox = toolbox_of(settings)
        random.seed(3)
        genome = toolbox.individual()
        plan = toolbox.evaluate.func.decode(genome)
        assert any(step.method != "take" for _, step in plan.parts) or settings["genome"] in ("choice", "stack")
        keep(f"{name}-random", toolbox, genome, settings)
    for name, (settings, genes) in CRAFTED.items():
        toolbox = toolbox_of(settings)
        groups = toolbox.evaluate.func.space.groups()
        keep(name, toolbox, [g for i in range(len(groups)) for g in genes(i, len(groups) - 1)], settings)
    return pairs


@pytest.mark.slow  # starts processes
def test_mergekit_builds_the_same_tensors_in_every_part_without_a_note(mergekit_python, built, tmp_path):
    arguments = []
    for i, (config, _, _) in enumerate(built):
        arguments += [str(config), str(tmp_path / f"out{i}")]
    done = subprocess.run([str(mergekit_python), str(DRIVER), *arguments], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]  # mergekit accepts every config (della's epsilon too)
    compared = 0
    for i, (config, ours_dir, plan) in enumerate(built):
        text = config.read_text()
        method = yaml.safe_load(text)["merge_method"]
        noted = noted_parts(text)
        steps = dict(plan.parts)
        assert noted == {part for part, step in steps.items() if step.method not in ("take", method)
                         or (step.method == "take" and method in ("model_stock", "karcher", "sce"))
                         or (step.method == method and MERGE_METHODS[method].random)}, config
        ours, theirs = _tensors(ours_dir), _tensors(tmp_path / f"out{i}")
        assert ours.keys() == theirs.keys(), config
        for name in ours:
            if part_of(name) not in noted:
                compared += 1
                torch.testing.assert_close(theirs[name].float(), ours[name].float(), atol=1e-5, rtol=1e-5,
                                           msg=f"{config}: {name}")
    assert compared > 500
    names = {config.parent.name: noted_parts(config.read_text()) for config, _, _ in built}
    assert names["takes-under-lambda"] == set() and names["takes-under-model-stock"] == {"embed"}
    assert names["takes-under-karcher"] == names["sce-and-takes"] == {"embed"} and names["nearswap-and-takes"] == set()
