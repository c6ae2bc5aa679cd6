"""A whole run from a validated config: search, then the output directory of DESIGN.md."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import LLMMergeError
from ..evolve.ga import LLMMergeGA
from ..models.loading import sha256_of
from ..models.mergekit_yaml import mergekit_config
from ..models.plans import MergePlan
from ..models.sources import SourcePool
from ..scoring.benchmark_files import build_benchmark, load_tokenizer
from ..scoring.benchmarks import BenchmarkData, load_benchmark
from ..scoring.lm_eval_tasks import lm_eval_benchmark
from ..scoring.objectives import SINGLE
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_resumable,
    json_values,
    load_checkpoint,
    restore_ga,
    save_checkpoint,
)
from .comparisons import compare_with_references, no_merge
from .config import BenchmarkEntry, RunConfig
from .export import as_dtype, export_recipe
from .item_results import ITEMS_NAME, load_item_results, save_item_results
from .model_card import model_card
from .output import atomic_write_text, logbook_csv, prepare_output_dir, save_model, tokenizer_folder

__all__ = ["RunResult", "run_config", "export_recipe", "load_benchmarks", "load_sources", "build_ga", "SaveError"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    ga: LLMMergeGA
    best: list
    fitness: tuple[float, ...]
    validation: dict[str, dict[str, float]] | None
    output: Path


def load_benchmarks(entries: dict[str, BenchmarkEntry], tokenizer_from: Path,
                    trust_remote_code: bool = False) -> dict[str, BenchmarkData]:
    """Tensors for every benchmark entry: ``.pt`` files loaded safely, other kinds built with the tokenizer."""
    tokenizer = None
    loaded = {}
    for name, entry in entries.items():
        kind = entry.resolved_kind
        if entry.lm_eval is not None:
            tokenizer = tokenizer or load_tokenizer(tokenizer_from, trust_remote_code)
            loaded[name] = lm_eval_benchmark(entry.lm_eval, tokenizer, include_path=entry.include_path,
                                             split=entry.split, limit=entry.limit, num_fewshot=entry.num_fewshot,
                                             normalization=entry.normalization)
            continue
        if entry.path.suffix == ".pt":
            loaded[name] = load_benchmark(entry.path, None if kind == "tensors" else kind)
            continue
        if tokenizer is None:
            tokenizer = load_tokenizer(tokenizer_from, trust_remote_code)
        loaded[name] = build_benchmark(kind, entry.path, tokenizer, window=entry.window,
                                       normalization=entry.normalization, max_items=entry.max_items,
                                       fields=dict(entry.fields))
    return loaded


def _benchmark_argument(loaded: dict[str, BenchmarkData]) -> object:
    return loaded[SINGLE] if list(loaded) == [SINGLE] else loaded


def load_sources(config: RunConfig) -> SourcePool:
    return SourcePool([{"path": entry.path, "name": entry.name} for entry in config.models],
                      trust_remote_code=config.trust_remote_code, base=config.base)


def build_ga(config: RunConfig, base_map: Callable = map, pool: SourcePool | None = None) -> LLMMergeGA:
    """The LLMMergeGA a config describes (sources loaded, benchmarks built and checked): the config is its
    genome, scoring and evolution settings at once."""
    tokenizer_from = _tokenizer_from(config)
    benchmarks = load_benchmarks(config.benchmarks(), tokenizer_from, config.trust_remote_code)
    return LLMMergeGA.from_settings(pool or load_sources(config), _benchmark_argument(benchmarks), config, config,
                                    config, map=base_map)


class _WriteCheckpoint:
    """GA callback: after every generation, the checkpoint and the logbook so far (each atomically)."""

    def __init__(self, output: Path, settings: dict, input_hashes: dict[str, str | None]) -> None:
        self.output, self.settings, self.input_hashes = output, settings, input_hashes

    def __call__(self, ga: LLMMergeGA, generation: int) -> None:
        save_item_results(self.output / ITEMS_NAME, ga.cached_map)
        save_checkpoint(self.output / CHECKPOINT_NAME, ga, self.settings, self.input_hashes)
        atomic_write_text(self.output / "logbook.csv", logbook_csv(ga.logbook, ga.objectives))


def _tokenizer_from(config: RunConfig) -> Path:
    """``tokenizer:``, else the first source (or the base) with tokenizer files."""
    return config.tokenizer or tokenizer_folder([config.models[0].path, config.base,
                                                 *(entry.path for entry in config.models[1:])])


def _benchmark_hash(entry: BenchmarkEntry) -> str:
    """A benchmark file's content hash; an lm-eval task's: its settings and its include_path's YAML files."""
    if entry.path is not None:
        return sha256_of(entry.path)
    digest = hashlib.sha256(entry.model_dump_json().encode())
    for file in sorted(entry.include_path.rglob("*.yaml")) if entry.include_path is not None else []:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _input_hashes(config: RunConfig) -> dict[str, str | None]:
    hashes: dict[str, str | None] = {f"source model {i}": sha256_of(entry.path)
                                     for i, entry in enumerate(config.models)}
    if config.base is not None:
        hashes["base model"] = sha256_of(config.base)
    for label, entries in (("benchmark", config.benchmarks()), ("validation", config.validations())):
        for name, entry in entries.items():
            hashes[label if name == SINGLE else f"{label} {name!r}"] = _benchmark_hash(entry)
    return hashes


def _settings(config: RunConfig) -> dict:
    """The config minus file locations (and the permission to run the models' code, which changes no result):
    what must not change between a run and its resume."""
    content = json.loads(config.model_dump_json())
    for key in ("models", "base", "benchmark", "validation", "tokenizer", "trust_remote_code", "output_dtype"):
        content.pop(key, None)
    return content


TIED_NOTE = "the final norm only: the output projection is the embedding matrix (tied), built by 'embed'"


def _plan_dict(ga: LLMMergeGA, individual: list) -> dict:
    """The recipe's form of a plan; with tied embeddings the head entry says what it covers."""
    plan = ga.evaluator.decode(individual).to_dict()
    model = ga.pool.reference_model
    head = model.get_output_embeddings()
    if "head" in plan and head is not None and head.weight is model.get_input_embeddings().weight:
        plan["head"]["note"] = TIED_NOTE
    return plan


def _member(ga: LLMMergeGA, individual: list) -> dict:
    return {"genome": list(individual), "plan": _plan_dict(ga, individual),
            "fitness": json_values(individual.fitness.values)}


def _recipe(config: RunConfig, ga: LLMMergeGA, best: list, held_out: dict | None) -> dict:
    hashes = _input_hashes(config)
    entries = ga.pool.entries
    recipe = {
        "genome": list(best),
        "genome_family": config.genome,
        "plan": _plan_dict(ga, best),
        "sources": [{"path": str(entry.path.absolute()), "name": source.name, "sha256": hashes[f"source model {i}"]}
                    for i, (entry, source) in enumerate(zip(config.models, entries))],
        "base": None if config.base is None else {"path": str(config.base.absolute()), "sha256": hashes["base model"],
                                                  "index": ga.pool.base_index},
        "fitness": json_values(best.fitness.values),
        "objectives": list(ga.objectives),
        "halloffame": [{"genome": list(ind), "fitness": json_values(ind.fitness.values), "plan": _plan_dict(ga, ind)}
                       for ind in ga.halloffame],
        "validation": held_out,
        "seed": config.ga.seed,
        "version": __version__,
        "config": json.loads(config.model_dump_json()),
        "run": {"processes": len(ga.cached_map.processes), "evaluations": ga.cached_map.evaluations,
                "failed_evaluations": ga.failed_evaluations},
    }
    if config.selection == "nsga2":
        recipe["front"] = [_member(ga, ind) for ind in ga.halloffame]
    return recipe


def _mergekit_yaml(config: RunConfig, ga: LLMMergeGA, plan: MergePlan) -> str:
    pool = ga.pool
    paths = [str(entry.path) for entry in config.models] + ([str(config.base)] if len(pool.entries) > pool.num_sources
                                                            else [])
    depths = [pool.num_layers] * len(paths)
    dtype = str(next(pool.reference_model.parameters()).dtype).removeprefix("torch.")
    return mergekit_config(plan, paths, depths, pool.num_sources, pool.base_index, config.method_options,
                           "float32" if dtype == "float32" else dtype)


def run_config(config: RunConfig, output: Path, base_map: Callable = map, *, resume: bool = False,
               force: bool = False, progress: bool = False) -> RunResult:
    """Run the search a config describes and write ``best/``, ``logbook.csv``, ``mergekit.yaml`` and
    ``recipe.json`` (last: it marks a finished run).

    A checkpoint is written after every generation. ``resume`` continues from it (refused when the
    config or the inputs changed, unless ``force``); without ``resume``, an existing non-empty
    ``output`` is refused unless ``force``.
    """
    log.info("loading %d source models%s and the benchmarks", len(config.models),
             "" if config.base is None else " and the base")
    pool = load_sources(config)
    tokenizer_from = _tokenizer_from(config)
    validation = load_benchmarks(config.validations(), tokenizer_from, config.trust_remote_code)
    for name, data in validation.items():
        label = "validation" if name == SINGLE else f"validation {name!r}"
        data.check_against(pool.vocab_size, pool.max_positions, label)
    ga = build_ga(config, base_map, pool)
    ga.cached_map.progress = progress
    settings, input_hashes = _settings(config), _input_hashes(config)
    if resume:
        if (output / "recipe.json").exists():
            raise CheckpointError(f"the run in {output} has already finished (recipe.json exists)")
        checkpoint = load_checkpoint(output / CHECKPOINT_NAME)
        if not force:
            check_resumable(checkpoint, settings, input_hashes)
        restore_ga(ga, checkpoint["state"])
        load_item_results(output / ITEMS_NAME, ga.cached_map)
        log.info("resuming %s after generation %d", output, ga.generation)
    else:
        prepare_output_dir(output, force=force)
    ga.callback = _WriteCheckpoint(output, settings, input_hashes)
    best = ga.run()
    log.info("scoring the best merge against the sources and seeded recipes%s", " and on the validation data"
             if validation else "")
    held_out, paired = compare_with_references(ga, best, validation)
    held_out = held_out or None
    itself = no_merge(ga, best)
    if itself is not None:
        log.warning("the best candidate is %s itself: no merge the search tried beat it on the fitness data", itself)
    model = as_dtype(ga.merge_layers(best).cpu(), config.output_dtype)
    recipe = {**_recipe(config, ga, best, held_out), "paired": paired, "best_is": itself}
    merge_yaml = _mergekit_yaml(config, ga, ga.evaluator.decode(best))
    card = model_card(recipe, merge_yaml, [source["path"] for source in recipe["sources"]], __version__)
    try:
        save_model(model, output / "best", tokenizer_from=tokenizer_from, replace=True,
                   files={"README.md": card})
        atomic_write_text(output / "logbook.csv", logbook_csv(ga.logbook, ga.objectives))
        atomic_write_text(output / "mergekit.yaml", merge_yaml)
        atomic_write_text(output / "recipe.json", json.dumps(recipe, indent=2, allow_nan=False) + "\n")
    except Exception as exc:  # ENOSPC, EACCES, EROFS, safetensors or tokenizer errors: the search is safe
        raise SaveError(f"cannot save the finished run into {output}: {_cause(exc)}; the search is checkpointed: "
                        f"fix that and run again with --resume to save it without searching again") from exc
    log.info("best genome %s: %s", [round(g, 3) if isinstance(g, float) else g for g in best],
             ", ".join(f"{name} {value:.4g}" for name, value in zip(ga.objectives, best.fitness.values)))
    return RunResult(ga, best, tuple(best.fitness.values), held_out, output)


class SaveError(LLMMergeError):
    """The search finished but its results could not be written."""


def _cause(exc: Exception) -> str:
    """What went wrong, in a few words: the system's message for an OS error, wherever it was raised."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    text = str(exc).strip()
    found = re.search(r"os error (\d+)", text)
    if found:  # safetensors and tokenizers wrap the OS error in their own
        return os.strerror(int(found.group(1))) + f" ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
