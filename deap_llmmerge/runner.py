"""A whole run from a validated config: search, then the output directory of DESIGN.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .checkpoint import CHECKPOINT_NAME, CheckpointError, check_resumable, load_checkpoint, restore_ga, save_checkpoint
from .config import RunConfig
from .data import load_benchmark
from .errors import LLMMergeError
from .ga import LLMMergeGA
from .merge import MergeEngine, MergePlan
from .output import atomic_write_text, logbook_csv, prepare_output_dir, save_model
from .sources import SourcePool, sha256_of

__all__ = ["RunResult", "run_config", "export_recipe"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    ga: LLMMergeGA
    best: list
    fitness: tuple[float, ...]
    validation: tuple[float, ...] | None
    output: Path


def build_ga(config: RunConfig, base_map: Callable = map) -> LLMMergeGA:
    """The LLMMergeGA a config describes (sources loaded, benchmark validated)."""
    settings = config.ga
    return LLMMergeGA(
        [{"path": entry.path, "name": entry.name} for entry in config.models],
        load_benchmark(config.benchmark),
        population_size=settings.population_size,
        max_generations=settings.max_generations,
        crossover_rate=settings.crossover_rate,
        mutation_rate=settings.mutation_rate,
        elitism_rate=settings.elitism_rate,
        device=config.device,
        genome=config.genome,
        seed=settings.seed,
        batch_size=config.batch_size,
        patience=settings.patience,
        tournament_size=settings.tournament_size,
        halloffame_size=settings.halloffame_size,
        max_failed_share=settings.max_failed_share,
        map=base_map,
        trust_remote_code=config.trust_remote_code,
    )


class _WriteCheckpoint:
    """GA callback: after every generation, the checkpoint (atomically) and the logbook so far."""

    def __init__(self, output: Path, settings: dict, input_hashes: dict[str, str | None]) -> None:
        self.output, self.settings, self.input_hashes = output, settings, input_hashes

    def __call__(self, ga: LLMMergeGA, generation: int) -> None:
        save_checkpoint(self.output / CHECKPOINT_NAME, ga, self.settings, self.input_hashes)


def run_config(config: RunConfig, output: Path, base_map: Callable = map, *, resume: bool = False,
               force: bool = False, progress: bool = False) -> RunResult:
    """Run the search a config describes and write ``best/``, ``recipe.json`` and ``logbook.csv``.

    A checkpoint is written after every generation. ``resume`` continues from it (refused when the
    config or the source models changed, unless ``force``); without ``resume``, an existing non-empty
    ``output`` is refused unless ``force``.
    """
    ga = build_ga(config, base_map)
    ga.cached_map.progress = progress
    validation = None if config.validation is None else load_benchmark(config.validation)
    source_hashes = [sha256_of(entry.path) for entry in config.models]
    config_json = json.loads(config.model_dump_json())
    settings = {key: value for key, value in config_json.items() if key not in ("models", "benchmark", "validation")}
    input_hashes = {
        **{f"source model {i}": digest for i, digest in enumerate(source_hashes)},
        "benchmark": sha256_of(config.benchmark),
        "validation": None if config.validation is None else sha256_of(config.validation),
    }
    if resume:
        if (output / "recipe.json").exists():
            raise CheckpointError(f"the run in {output} has already finished (recipe.json exists)")
        checkpoint = load_checkpoint(output / CHECKPOINT_NAME)
        if not force:
            check_resumable(checkpoint, settings, input_hashes)
        restore_ga(ga, checkpoint["state"])
        log.info("resuming %s after generation %d", output, ga.generation)
    else:
        prepare_output_dir(output, force=force)
    ga.callback = _WriteCheckpoint(output, settings, input_hashes)
    best = ga.run()
    model = ga.merge_layers(best)
    held_out = None if validation is None else ga.evaluate(model, validation)
    recipe = {
        "genome": list(best),
        "genome_family": config.genome,
        "plan": ga.evaluator.decode(best).to_dict(),
        "sources": [{"path": str(entry.path), "name": source.name, "sha256": digest}
                    for entry, source, digest in zip(config.models, ga.pool.sources, source_hashes)],
        "fitness": list(best.fitness.values),
        "halloffame": [{"genome": list(ind), "fitness": list(ind.fitness.values)} for ind in ga.halloffame],
        "validation": None if held_out is None else list(held_out),
        "objectives": list(ga.objectives),
        "seed": config.ga.seed,
        "version": __version__,
        "config": config_json,
        "run": {"processes": len(ga.cached_map.processes), "evaluations": ga.cached_map.evaluations,
                "failed_evaluations": ga.failed_evaluations},
    }
    atomic_write_text(output / "logbook.csv", logbook_csv(ga.logbook, ga.objectives))
    atomic_write_text(output / "recipe.json", json.dumps(recipe, indent=2) + "\n")
    save_model(model.cpu(), output / "best", tokenizer_from=config.models[0].path, replace=force)
    log.info("best genome %s: fitness %s", list(best), best.fitness.values)
    return RunResult(ga, best, tuple(best.fitness.values), held_out, output)


def export_recipe(recipe_path: Path, output: Path, check_hashes: bool = True) -> Path:
    """Rebuild the merged model a ``recipe.json`` describes and save it to ``output``."""
    try:
        recipe = json.loads(Path(recipe_path).read_text())
        sources = [Path(source["path"]) for source in recipe["sources"]]
        plan = MergePlan.from_dict(recipe["plan"])
    except FileNotFoundError as exc:
        raise LLMMergeError(f"recipe not found: {recipe_path}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise LLMMergeError(f"{recipe_path}: not a deap-llmmerge recipe ({type(exc).__name__}: {exc})") from exc
    for source, path in zip(recipe["sources"], sources):
        if not path.exists():
            raise LLMMergeError(f"recipe source not found: {path}")
        if check_hashes and sha256_of(path) != source.get("sha256"):
            raise LLMMergeError(f"recipe source {path} has changed since the run (sha256 differs)")
    if output.exists():
        raise LLMMergeError(f"{output} already exists; refusing to overwrite it")
    pool = SourcePool(sources)
    model = MergeEngine(pool, pool.new_skeleton()).apply(plan)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, output, tokenizer_from=sources[0])
    return output
