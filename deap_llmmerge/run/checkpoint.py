"""Checkpoints: everything a run needs to continue exactly where it stopped, as plain JSON.

A checkpoint holds the population, generation, hall of fame, logbook, fitness cache, the python,
numpy and torch RNG states, the validated settings and the content hashes of the models and data. It is JSON, not
pickle, so loading one never runs code; it is written to a temporary file and renamed, so a kill
leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import LLMMergeError
from ..evolve.ga import LLMMergeGA
from .output import atomic_write_text

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "ga_state", "restore_ga", "save_checkpoint", "load_checkpoint",
           "check_resumable", "json_values", "from_json_values", "layout"]

CHECKPOINT_NAME = "checkpoint.json"
FORMAT = 2


class CheckpointError(LLMMergeError):
    """A checkpoint is missing, corrupt, or belongs to another config or other source models."""


def json_values(values: Sequence[float]) -> list[float | None]:
    """Fitness values for standard JSON: a non-finite value (a failed or invalid candidate) is null."""
    return [float(v) if math.isfinite(v) else None for v in values]


def from_json_values(values: Sequence[float | None], weights: Sequence[float]) -> tuple[float, ...]:
    """The inverse of :func:`json_values`: null is the worst value of its objective."""
    return tuple((-math.inf if w > 0 else math.inf) if v is None else float(v) for v, w in zip(values, weights))


def _number(value: object) -> object:
    """A logbook statistic for standard JSON (NaN, from a generation without one finite value, is null)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _individuals(individuals: list) -> list[dict]:
    return [{"genome": list(ind), "fitness": json_values(ind.fitness.values) if ind.fitness.valid else None}
            for ind in individuals]


def _rng_state() -> dict:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [name, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def ga_state(ga: LLMMergeGA) -> dict:
    """The loop state of ``ga`` after its last finished generation."""
    logbook = [
        {**record, **{name: {key: _number(value) for key, value in ga.logbook.chapters[name][i].items()}
                      for name in ga.objectives}}
        for i, record in enumerate(ga.logbook)
    ]
    return {
        "generation": ga.generation,
        "improved_at": ga.improved_at,
        "failed_evaluations": ga.failed_evaluations,
        "population": _individuals(ga.population),
        "halloffame": _individuals(ga.halloffame),
        "logbook": logbook,
        "cache": [[ga.cached_map.genomes[key], json_values(values)] for key, values in ga.cached_map.cache.items()],
        "evaluations": ga.cached_map.evaluations,
        "mutation_rate": ga.current_mutation_rate,
        "in_flight": ga.steady.in_flight if ga.steady is not None else [],  # steady-state children being scored
        "rng": _rng_state(),
        **({"cmaes": ga.cmaes.state()} if ga.cmaes is not None else {}),
        **({"cheap_fitness": ga.cheap.state(ga)} if ga.cheap is not None else {}),
    }


def restore_ga(ga: LLMMergeGA, state: dict) -> None:
    """Put ``ga`` back into the state ``ga_state`` saved; ``ga.run()`` then continues the run."""

    weights = ga.evaluator.weights

    def individual(saved: dict) -> list:
        ind = ga.toolbox.pure(source=0)
        ind[:] = saved["genome"]
        if saved["fitness"] is not None:
            ind.fitness.values = from_json_values(saved["fitness"], weights)
        return ind

    ga.generation = state["generation"]
    ga.improved_at = state["improved_at"]
    ga.failed_evaluations = state["failed_evaluations"]
    ga.population = [individual(saved) for saved in state["population"]]
    ga.halloffame.items = [individual(saved) for saved in state["halloffame"]]
    ga.halloffame.keys = [ind.fitness for ind in reversed(ga.halloffame.items)]
    ga.logbook.clear()
    for chapter in ga.logbook.chapters.values():
        chapter.clear()
    for record in state["logbook"]:
        ga.logbook.record(**{key: ({k: math.nan if v is None else v for k, v in value.items()}
                                   if isinstance(value, dict) else value) for key, value in record.items()})
    ga.cached_map.cache.clear()
    ga.cached_map.genomes.clear()
    for genome, values in state["cache"]:
        ga.cached_map.remember(genome, from_json_values(values, weights))
    ga.cached_map.evaluations = state["evaluations"]
    if ga.steady is not None:
        ga.steady.in_flight = [list(genome) for genome in state.get("in_flight", [])]
    if ga.current_mutation_rate != state["mutation_rate"]:
        ga.current_mutation_rate = state["mutation_rate"]
        ga.evaluator.family.register_operators(ga.toolbox, ga.evaluator.space, state["mutation_rate"])
    _set_rng_state(state["rng"])
    if ga.cmaes is not None and "cmaes" in state:
        ga.cmaes.restore(state["cmaes"])
    if ga.cheap is not None and "cheap_fitness" in state:
        ga.cheap.restore(ga, state["cheap_fitness"])


def layout(ga: LLMMergeGA) -> dict:
    """What a reader of the checkpoint needs to decode its genomes without loading the models: the genome
    space, the family, the sources' names and the objectives."""
    space = dataclasses.asdict(ga.evaluator.space)
    return {"family": ga.evaluator.family.name, "space": space, "sources": [s.name for s in ga.pool.sources],
            "objectives": list(ga.objectives), "weights": list(ga.evaluator.weights),
            "max_generations": ga.max_generations, "selection": ga.selection}


def save_checkpoint(path: Path, ga: LLMMergeGA, config: dict, input_hashes: dict[str, str | None]) -> None:
    content = {"format": FORMAT, "config": config, "input_hashes": input_hashes, "layout": layout(ga),
               "state": ga_state(ga)}
    atomic_write_text(path, json.dumps(content, allow_nan=False))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint; a missing, truncated or foreign file is a CheckpointError naming it."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path}")
    try:
        content = json.loads(path.read_text())
        if content.get("format") != FORMAT:
            raise ValueError(f"format {content.get('format')!r}")
        if not isinstance(content["state"]["generation"], int) or not isinstance(content["input_hashes"], dict):
            raise ValueError("missing generation or input hashes")
        if not isinstance(content["config"], dict):
            raise ValueError("missing config")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a deap-llmmerge checkpoint ({type(exc).__name__})") from exc
    return content


def _first_difference(saved: object, current: object, key: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for name in sorted(set(saved) | set(current)):
            found = _first_difference(saved.get(name), current.get(name), f"{key}.{name}" if key else name)
            if found:
                return found
        return None
    return None if saved == current else f"{key!r} was {saved!r}, is now {current!r}"


def check_resumable(checkpoint: dict, config: dict, input_hashes: dict[str, str | None]) -> None:
    """Refuse to resume a checkpoint written with other settings or other inputs.

    Settings are compared key by key; models and data by content (sha256), not by path, so a run folder
    and its inputs can move.
    """
    difference = _first_difference(checkpoint["config"], config)
    if difference:
        raise CheckpointError(f"config changed since the checkpoint: {difference} (--force resumes anyway)")
    for name, current in input_hashes.items():
        if checkpoint["input_hashes"].get(name) != current:
            raise CheckpointError(f"{name} changed since the checkpoint (sha256 differs; --force resumes anyway)")
