"""``deap-llmmerge export``: rebuild the merge a ``recipe.json`` describes (its best, or member K of its front
or hall of fame) from the sources, and save it with a model card.

A recipe is data from whoever shared it: its ``trust_remote_code`` never runs the sources' custom code; only
the caller's ``trust_remote_code`` (``--trust-remote-code``) does. Sources that moved since the run are
found with ``models_from`` (``--models-from DIR``: each source by its folder or file name in ``DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import LLMMergeError
from ..models.engine import MergeEngine
from ..models.loading import sha256_of
from ..models.mergekit_yaml import mergekit_config
from ..models.plans import MergePlan
from ..models.sources import SourcePool
from .model_card import model_card
from .output import save_model, tokenizer_folder

__all__ = ["export_recipe", "read_member", "as_dtype"]


def as_dtype(model: nn.Module, dtype: str | None) -> nn.Module:
    """``model`` in ``dtype`` (bfloat16, float16, float32), or as it is."""
    return model if dtype is None else model.to(getattr(torch, dtype))


def _resolve(path: str, recipe_path: Path, models_from: Path | None) -> Path:
    """A recipe's source path: in ``models_from`` by its name when given; else absolute, or relative to the
    recipe's folder (then to the working directory)."""
    candidate = Path(path)
    if models_from is not None:
        return Path(models_from) / candidate.name
    if candidate.is_absolute():
        return candidate
    beside = recipe_path.parent / candidate
    return beside if beside.exists() else candidate


def _members(recipe: dict) -> tuple[str, list[dict]]:
    """What ``--member`` numbers: the Pareto front (NSGA-II), else the hall of fame (best first)."""
    if recipe.get("front"):
        return "Pareto front", recipe["front"]
    return "hall of fame", recipe.get("halloffame") or []


def read_member(recipe_path: Path, member: int | None = None) -> tuple[Path, dict, dict]:
    """``(recipe.json's path, the recipe, the chosen member: {plan, fitness})`` (the best when ``member`` is
    None), every problem a one-line :class:`LLMMergeError`."""
    recipe_path = Path(recipe_path)
    if recipe_path.is_dir():
        recipe_path = recipe_path / "recipe.json"
    try:
        recipe = json.loads(recipe_path.read_text())
        chosen = {"plan": recipe["plan"], "fitness": recipe.get("fitness")}
        if member is not None:
            where, members = _members(recipe)
            if not members:
                raise LLMMergeError(f"{recipe_path} has no front or hall of fame to take member {member} from")
            if not 0 <= member < len(members):
                raise LLMMergeError(f"--member {member}: the {where} has members 0..{len(members) - 1}")
            if "plan" not in members[member]:
                raise LLMMergeError(f"{recipe_path}: its hall of fame has no plans (written by an older deap-llmmerge)"
                                    "; export its best (no --member)")
            chosen = {"plan": members[member]["plan"], "fitness": members[member].get("fitness")}
        MergePlan.from_dict(chosen["plan"])
        recipe["sources"][0]["path"]
    except FileNotFoundError as exc:
        raise LLMMergeError(f"recipe not found: {recipe_path}") from exc
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise LLMMergeError(f"{recipe_path}: not a deap-llmmerge recipe ({type(exc).__name__}: {exc})") from exc
    return recipe_path, recipe, chosen


def export_recipe(recipe_path: Path, output: Path, check_hashes: bool = True, member: int | None = None,
                  trust_remote_code: bool = False, models_from: Path | None = None) -> Path:
    """Rebuild the merged model a ``recipe.json`` (or a run folder holding one) describes, or member
    ``member`` of its Pareto front or hall of fame (numbered from 0, best first), and save it to ``output``."""
    recipe_path, recipe, chosen = read_member(recipe_path, member)
    config = recipe.get("config", {})
    if config.get("trust_remote_code", False) and not trust_remote_code:
        raise LLMMergeError(f"{recipe_path}: its source models need their own code (trust_remote_code in the "
                            "recipe), which a recipe alone never runs; add --trust-remote-code if you trust the "
                            "code in those model folders")
    sources = [_resolve(source["path"], recipe_path, models_from) for source in recipe["sources"]]
    checked = list(zip(recipe["sources"], sources))
    base_path = None
    if recipe.get("base"):
        base_path = _resolve(recipe["base"]["path"], recipe_path, models_from)
        checked.append((recipe["base"], base_path))
    for source, path in checked:
        if not path.exists():
            hint = "" if models_from is not None else "; if the sources moved, give --models-from DIR (the folder " \
                                                      "that holds them now)"
            raise LLMMergeError(f"recipe source not found: {path}{hint}")
        if check_hashes and sha256_of(path) != source.get("sha256"):
            raise LLMMergeError(f"recipe source {path} has changed since the run (sha256 differs)")
    if output.exists():
        raise LLMMergeError(f"{output} already exists; refusing to overwrite it")
    method_options = config.get("method_options") or {}
    plan = MergePlan.from_dict(chosen["plan"])
    pool = SourcePool(sources, trust_remote_code=trust_remote_code, base=base_path)
    model = as_dtype(MergeEngine(pool, pool.new_skeleton(), method_options).apply(plan), config.get("output_dtype"))
    paths = [str(p) for p in [*sources, *([base_path] if base_path else [])]]
    merge_yaml = mergekit_config(plan, paths, [pool.num_layers] * len(pool.entries), pool.num_sources,
                                 pool.base_index, method_options)
    card = model_card({**recipe, **chosen}, merge_yaml, [str(p) for p in sources], __version__)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, output, tokenizer_from=tokenizer_folder([*sources, base_path]), files={"README.md": card})
    return output
