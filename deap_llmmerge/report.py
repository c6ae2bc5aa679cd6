"""``deap-llmmerge report DIR``: PNG plots of a finished run, from its logbook, recipe and checkpoint.

- ``objectives.png``: max / mean / min of every objective by generation;
- ``pareto.png``: every candidate scored in the run, accuracy against loss, with its Pareto front;
- ``sources.png``: heat map of which source each part of the hall-of-fame genomes comes from.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME
from .errors import LLMMergeError
from .output import publish

__all__ = ["write_report", "pareto_front"]


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both objectives (higher accuracy, lower loss), by accuracy."""
    front = [p for p in points
             if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)]
    return sorted(set(front))


def _save(figure, path: Path) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
        publish(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _objectives(plt, rows: list[dict], objectives: list[str], path: Path) -> None:
    figure, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 3.5))
    generations = [int(row["gen"]) for row in rows]
    for axis, name in zip(axes, objectives):
        for stat, style in (("max", "-"), ("mean", "--"), ("min", ":")):
            axis.plot(generations, [float(row[f"{name}_{stat}"]) for row in rows], style, label=stat)
        axis.set(title=name, xlabel="generation")
        axis.legend()
    _save(figure, path)
    plt.close(figure)


def _pareto(plt, cache: list, path: Path) -> bool:
    points = [(values[0], values[1]) for _, values in cache if all(map(math.isfinite, values[:2]))]
    if len(points) < 2:
        return False
    front = pareto_front(points)
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.scatter([p[1] for p in points], [p[0] for p in points], s=12, alpha=0.4, label="scored candidates")
    axis.plot([p[1] for p in front], [p[0] for p in front], "o-", color="C3", label="Pareto front")
    axis.set(xlabel="loss (lower is better)", ylabel="accuracy (higher is better)")
    axis.legend()
    _save(figure, path)
    plt.close(figure)
    return True


def _sources(plt, recipe: dict, path: Path) -> None:
    parts = list(recipe["plan"])
    n_sources = len(recipe["sources"])
    rows = []
    for entry in recipe["halloffame"]:
        genome = entry["genome"]
        if len(genome) == len(parts):  # one gene per part: the source index
            rows.append([float(gene) for gene in genome])
        else:  # one weight per source and part: the source with the largest weight
            rows.append([float(max(range(n_sources), key=lambda k, p=p: genome[p * n_sources + k]))
                         for p in range(len(parts))])
    figure, axis = plt.subplots(figsize=(max(5, 0.5 * len(parts)), 0.5 * len(rows) + 1.5))
    image = axis.imshow(rows, aspect="auto", cmap="viridis", vmin=0, vmax=n_sources - 1)
    axis.set_xticks(range(len(parts)), parts, rotation=60, ha="right")
    axis.set_yticks(range(len(rows)), [f"#{i + 1}  acc {e['fitness'][0]:.3f}"
                                       for i, e in enumerate(recipe["halloffame"])])
    colorbar = figure.colorbar(image, ticks=range(n_sources))
    colorbar.ax.set_yticklabels([source["name"] for source in recipe["sources"]])
    axis.set_title("source of each part, hall of fame")
    _save(figure, path)
    plt.close(figure)


def write_report(run: Path) -> list[Path]:
    """Draw the plots of the finished run in ``run`` into ``run/report/``; return their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise LLMMergeError("plots need matplotlib: pip install 'deap-llmmerge[plots]'") from exc
    for name in ("recipe.json", "logbook.csv"):
        if not (run / name).is_file():
            raise LLMMergeError(f"{run} holds no finished run ({name} is missing)")
    try:
        recipe = json.loads((run / "recipe.json").read_text())
        rows = list(csv.DictReader((run / "logbook.csv").read_text().splitlines()))
        objectives = recipe["objectives"]
        checkpoint = run / CHECKPOINT_NAME
        cache = json.loads(checkpoint.read_text())["state"]["cache"] if checkpoint.is_file() else []
    except (ValueError, KeyError) as exc:
        raise LLMMergeError(f"{run}: unreadable run files ({type(exc).__name__}: {exc})") from exc
    folder = run / "report"
    folder.mkdir(exist_ok=True)
    written = [folder / "objectives.png"]
    _objectives(plt, rows, objectives, written[0])
    if _pareto(plt, cache, folder / "pareto.png"):
        written.append(folder / "pareto.png")
    _sources(plt, recipe, folder / "sources.png")
    written.append(folder / "sources.png")
    return written
