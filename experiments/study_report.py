"""The SmolLM2 study's held-out table and plots: baselines, random search and the searches' merges."""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _load(folder: Path):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def stored_path(folder: Path | str) -> str:
    """How a model folder is named in held-out.json and results.json: from ``.cache/smollm2/`` on, so the
    scores and the tables mean the same in any checkout (keys written by older reports, absolute paths, are
    read the same way)."""
    text = Path(folder).as_posix()
    marker = "/.cache/smollm2/"
    return ".cache/smollm2/" + text.split(marker, 1)[1] if marker in text else text


def _score_folder(task: tuple) -> tuple[str, dict]:
    folder, data, score = task
    torch.set_num_threads(1)
    return str(folder), score(_load(Path(folder)), data)


def _members(recipe: dict, whole_front: bool = False) -> dict[str, int | None]:
    """Which of a run's merges to score held out: the best (tournament) or three front members (NSGA-II):
    best on the QA objective (accuracy, or choice loss), best on Shakespeare loss, and the balanced one: the
    member nearest the ideal point once each objective is scaled to [0, 1] over the front (the front's
    knee; on a two-objective front every member's two ranks add up to the same, so ranks cannot choose);
    with ``whole_front``, every other front member too, in the front's order (best QA first)."""
    front = recipe.get("front")
    if not front:
        return {"best": None}
    up = 1.0 if recipe.get("objectives", ["qa.accuracy"])[0].endswith("accuracy") else -1.0
    points = [(-up * member["fitness"][0], member["fitness"][1]) for member in front]  # both: lower is better
    by_qa = min(range(len(points)), key=lambda i: points[i])
    by_play = min(range(len(points)), key=lambda i: (points[i][1], points[i][0]))
    low = [min(p[k] for p in points) for k in (0, 1)]
    span = [max(p[k] for p in points) - low[k] or 1.0 for k in (0, 1)]
    balanced = min(range(len(points)), key=lambda i: sum(((points[i][k] - low[k]) / span[k]) ** 2 for k in (0, 1)))
    named = {"best QA": by_qa, "balanced": balanced, "best play": by_play}
    if not whole_front:
        return named
    others = sorted((i for i in range(len(points)) if i not in named.values()), key=lambda i: points[i])
    return {**named, **{f"front member {i}": i for i in others}}


def _baselines(setup: dict, folder: Path) -> dict[str, Path]:
    from deap_llmmerge import merge_models
    from deap_llmmerge.run.output import save_model

    experts, base = setup["experts"], setup["base"]
    sources = [experts["qa"], experts["shakespeare"]]
    recipes = {"uniform average": ("linear", {}), "task arithmetic (mergekit defaults)": ("task_arithmetic", {}),
               "TIES (mergekit defaults)": ("ties", {})}
    paths = {"base": base, "QA expert": experts["qa"], "Shakespeare expert": experts["shakespeare"]}
    for label, (method, params) in recipes.items():
        out = folder / label.split(" (")[0].replace(" ", "-")
        if not (out / "config.json").exists():
            save_model(merge_models(sources, method, base_model=None if method == "linear" else base, **params), out,
                       tokenizer_from=base, replace=True)
        paths[label] = out
    return paths


def _genome_tag(genome: dict) -> str:
    """A file-name tag of a random search's genome settings: its cached draws and exported members are only
    reused by a search over the same genome."""
    wide = "-wide" if genome.get("negative_weights") else ""
    return f"{genome['method']}-{genome.get('genome_granularity', 'layer').replace(':', '')}{wide}"


def _genome_name(genome: dict) -> str:
    wide = ", weights in [-0.5, 1.5]" if genome.get("negative_weights") else ""
    return f"{genome['method']} genome{wide}"


def _random_search(setup: dict, reference: dict, genome: dict, out: Path) -> dict:
    """As many random genomes (of the ``reference`` search's ``genome`` settings) as that search evaluated
    (``reference`` is its recipe), scored on the fitness data; a recipe-like record of their Pareto front,
    cached in ``out``."""
    if out.exists():
        return json.loads(out.read_text())
    from deap import tools

    from deap_llmmerge import PoolMap
    from deap_llmmerge.run.config import RunConfig
    from deap_llmmerge.run.runner import build_ga

    evaluations = reference["run"]["evaluations"]
    config = RunConfig.model_validate({**setup["config"], **genome, "selection": "nsga2",
                                       "ga": {"population_size": 2, "max_generations": 0}})
    pool = PoolMap(2)
    started = time.time()
    try:
        ga = build_ga(config, pool)
        random.seed(1)
        genomes = [ga.toolbox.individual() for _ in range(evaluations)]
        for ind, values in zip(genomes, ga.toolbox.map(ga.toolbox.evaluate, genomes)):
            ind.fitness.values = values
        front = tools.ParetoFront()
        front.update(genomes)
        record = {"front": [{"genome": list(ind), "plan": ga.evaluator.decode(ind).to_dict(),
                             "fitness": list(ind.fitness.values)} for ind in front],
                  "objectives": list(ga.objectives), "run": {"evaluations": evaluations},
                  "wall_seconds": time.time() - started}
    finally:
        pool.close()
    out.write_text(json.dumps(record))
    return record


def _export(run: Path, member: int | None, out: Path) -> Path:
    from deap_llmmerge.run.runner import export_recipe

    if not (out / "config.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        export_recipe(run, out, member=member)
    return out


def write_report(setup: dict, runs: dict[str, Path], held_out: dict, score: Callable, results: Path, command: str,
                 started: float, random_of: tuple[str, dict] | None = None, whole_front: bool = False) -> None:
    """The held-out table of the baselines and ``runs``' merges, and of a random search with the genome
    settings and the evaluation count of the search ``random_of`` names (label, genome settings); every
    front member held out with ``whole_front``, else three (see :func:`_members`)."""
    models = setup["work"] / "models"
    models.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    for label, path in _baselines(setup, models).items():
        rows[label] = {"folder": path, "kind": "baseline"}
    recipes = {label: json.loads((run / "recipe.json").read_text()) for label, run in runs.items()}
    for label, run in runs.items():
        recipe = recipes[label]
        for name, member in _members(recipe, whole_front).items():
            fitness = recipe["fitness"] if member is None else recipe["front"][member]["fitness"]
            folder = _export(run, member, models / f"{run.name}-{'best' if member is None else member}")
            rows[f"{label}: {name}"] = {"folder": folder, "kind": "evolved", "fitness": fitness,
                                        "evaluations": recipe["run"]["evaluations"],
                                        "seconds": float((run / "wall_seconds.txt").read_text())
                                        if (run / "wall_seconds.txt").exists() else None}
    if random_of is not None:
        label, genome = random_of
        tag = _genome_tag(genome)
        record = _random_search(setup, recipes[label], genome, models / f"random-search-{tag}.json")
        fake_run = models / f"random-search-{tag}-run"
        fake_run.mkdir(exist_ok=True)
        (fake_run / "recipe.json").write_text(json.dumps({**recipes[label], **record,
                                                          "plan": record["front"][0]["plan"]}))
        for name, member in _members(record, whole_front).items():
            folder = _export(fake_run, member, models / f"random-{tag}-{member}")
            rows[f"random search ({_genome_name(genome)}): {name}"] = {
                "folder": folder, "kind": "random", "fitness": record["front"][member]["fitness"],
                "evaluations": record["run"]["evaluations"], "seconds": record["wall_seconds"]}
    cache = setup["work"] / "held-out.json"
    scores = {stored_path(key): value for key, value in json.loads(cache.read_text()).items()} if cache.exists() else {}
    todo = list(dict.fromkeys(str(row["folder"]) for row in rows.values() if stored_path(row["folder"]) not in scores))
    if todo:
        context = multiprocessing.get_context("spawn")
        with context.Pool(2) as pool:
            for folder, values in pool.imap_unordered(_score_folder, [(f, held_out, score) for f in todo]):
                scores[stored_path(folder)] = values
                cache.write_text(json.dumps(scores))
    for row in rows.values():
        row.update(scores[stored_path(row["folder"])])
    _write(results, rows, setup, command, started)


def _held_out_figures(row: dict) -> tuple:
    return tuple(value for key, value in sorted(row.items()) if key.endswith(("_accuracy", "play_loss")))


def _verdict(rows: dict[str, dict]) -> list[str]:
    """The target's check for every evolved merge, and whether each expert beats the base on its own task
    and loses on the other's. A merge whose held-out figures all equal a baseline's is that baseline (a
    recipe the search was seeded with and kept), and is said to be."""
    base, qa, play = rows["base"], rows["QA expert"], rows["Shakespeare expert"]
    lines = []
    checks = {"QA": (qa, qa["qa_accuracy"] > base["qa_accuracy"], qa["play_loss"] > base["play_loss"]),
              "Shakespeare": (play, play["play_loss"] < base["play_loss"], play["qa_accuracy"] < base["qa_accuracy"])}
    for name, (expert, beats_own, loses_other) in checks.items():
        if not (beats_own and loses_other):
            lines.append(f"- The {name} expert {'beats' if beats_own else 'does not beat'} the base on its own task "
                         f"and {'loses' if loses_other else 'does not lose'} on the other's "
                         f"(QA {expert['qa_accuracy']:.3f} against {base['qa_accuracy']:.3f}, Macbeth "
                         f"{expert['play_loss']:.3f} against {base['play_loss']:.3f}).")
    baselines = {_held_out_figures(row): label for label, row in rows.items() if row["kind"] == "baseline"}
    found = False
    for label, row in rows.items():
        if row["kind"] != "evolved":
            continue
        qa_ok = row["qa_accuracy"] >= qa["qa_accuracy"] - qa["qa_accuracy_ci"]
        play_ok = row["play_loss"] <= play["play_loss"] + play["play_loss_ci"]
        beats = all(row["qa_accuracy"] > rows[b]["qa_accuracy"] and row["play_loss"] < rows[b]["play_loss"]
                    for b in ("uniform average", "TIES (mergekit defaults)"))
        if qa_ok and play_ok and beats:
            same = baselines.get(_held_out_figures(row))
            found = found or same is None
            seeded = (f" It is the baseline *{same}* (every held-out figure the same): a recipe the search was "
                      "seeded with and kept on its front, not one it found." if same else "")
            lines.append(f"- **{label}** matches the QA expert on held-out QA accuracy and the Shakespeare expert "
                         "on held-out Macbeth loss within their 95% intervals, and beats the uniform average and "
                         f"TIES at mergekit's defaults on both.{seeded}")
    if not found:
        lines.append("- No merge the searches found (the recipes they were seeded with aside) matches both experts "
                     "within the intervals while beating the uniform average and TIES at defaults on both (see the "
                     "table).")
    return lines


def _write(results: Path, rows: dict[str, dict], setup: dict, command: str, started: float) -> None:
    from plots import front_plot, weights_plot

    results.mkdir(parents=True, exist_ok=True)
    tasks = list(setup["items"])
    qa_metric = "acc" if setup["config"]["objectives"][0] == "qa.accuracy" else "choice loss"
    header = ("| model | held-out QA accuracy (95% CI) | " + " | ".join(tasks)
              + f" | held-out Macbeth loss (95% CI) | fitness QA {qa_metric} | fitness Hamlet loss | evaluations "
              "| wall (s) |")
    lines = [header, "|---|" + "---|" * (len(tasks) + 6)]
    for label, row in rows.items():
        fitness = row.get("fitness") or [None, None]
        cells = [f"{row['qa_accuracy']:.3f} ± {row['qa_accuracy_ci']:.3f}",
                 *(f"{row[f'{task}_accuracy']:.3f}" for task in tasks),
                 f"{row['play_loss']:.3f} ± {row['play_loss_ci']:.3f}",
                 "" if fitness[0] is None else f"{fitness[0]:.3f}", "" if fitness[1] is None else f"{fitness[1]:.3f}",
                 str(row.get("evaluations", "")), "" if row.get("seconds") is None else f"{row['seconds']:.0f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    verdict = _verdict(rows)
    front_plot(rows, results / "front.png")
    weights_plot(setup["work"] / "runs", results / "weights.png")
    stored = {label: {**row, "folder": stored_path(row["folder"])} for label, row in rows.items()}
    (results / "results.json").write_text(json.dumps(stored, indent=2))
    n = rows["base"]["qa_items"]
    (results / "results.md").write_text(
        f"# SmolLM2-135M-Instruct: evolved merges of a QA expert and a Shakespeare expert\n\n"
        f"Command: `{command}` (seed 0), {time.time() - started:.0f} s in all on this machine, 2 SCOOP workers per "
        f"search. Fitness: {setup['budget']['fitness_items']} QA items per task and "
        f"{setup['budget']['fitness_windows']} windows of *Hamlet*; objectives "
        f"{', '.join(setup['config']['objectives'])}. Held out: {n} QA items ({', '.join(tasks)}) "
        f"and *Macbeth*; never seen by the search.\n\n"
        + "\n".join(lines) + "\n\n" + "\n".join(verdict) + "\n\n![front](front.png)\n\n![weights](weights.png)\n")
