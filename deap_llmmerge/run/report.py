"""``deap-llmmerge report DIR``: PNG plots of a run, finished or stopped, from its checkpoint and logbook.

- ``objectives.png``: max / mean / min of every objective by generation;
- ``pareto.png``: every candidate scored, one panel per pair of objectives (the first four), the hall-of-fame or
  front members labelled with the number ``export --member`` takes (from 0, best first);
- ``sources.png``: what each part of the hall-of-fame (or Pareto-front) merges takes from each source: a
  categorical map for layer choice; for weights, one diverging colour scale with the weight written in each
  cell (two sources) or one row per source and member (more); ``sources.json`` holds the drawn numbers;
- ``paired.md`` (a finished run): the best merge against each pure source and seeded recipe, item by item.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path

from ..errors import InvalidGenomeError, LLMMergeError
from ..genomes import GenomeSpace, get_family
from .checkpoint import CHECKPOINT_NAME, from_json_values
from .output import atomic_write_text, move_into_place

__all__ = ["write_report", "pareto_front", "source_weights", "paired_table"]


def pareto_front(points: list[tuple[float, float]], weights: tuple[float, float] = (1.0, -1.0)) -> list[tuple]:
    """The points no other point beats on both objectives (by ``weights``' directions), sorted."""
    def better_or_equal(q: tuple, p: tuple) -> bool:
        return all((a - b) * w >= 0 for a, b, w in zip(q, p, weights))

    front = [p for p in points if not any(q != p and better_or_equal(q, p) for q in points)]
    return sorted(set(front))


def _save(figure, path: Path) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120, bbox_inches="tight")
        move_into_place(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _objectives(plt, rows: list[dict], objectives: list[str], path: Path, title: str) -> None:
    figure, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 3.5), squeeze=False)
    generations = [int(row["gen"]) for row in rows]
    for axis, name in zip(axes[0], objectives):
        for stat, style in (("max", "-"), ("mean", "--"), ("min", ":")):
            axis.plot(generations, [float(row[f"{name}_{stat}"]) for row in rows], style, label=stat)
        axis.set(title=name, xlabel="generation")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: it never covers a curve
    figure.suptitle(title)
    _save(figure, path)
    plt.close(figure)


def _pareto(plt, points: list[tuple], members: list[tuple | None], names: list[str], weights: list[float],
            path: Path, title: str) -> bool:
    """Every scored candidate, one panel per pair of objectives (the first four), the members labelled with
    the number ``export --member`` takes; two objectives also draw their front as a line."""
    k = len(names)
    points = [p for p in points if len(p) == k and all(map(math.isfinite, p))]
    if k < 2 or len(points) < 2:
        return False
    pairs = [(i, j) for i in range(min(k, 4)) for j in range(i + 1, min(k, 4))]
    columns = min(3, len(pairs))
    rows = -(-len(pairs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.9 * rows), squeeze=False)
    better = {1.0: "higher is better", -1.0: "lower is better"}
    for axis, (i, j) in zip(axes.flat, pairs):
        axis.scatter([p[j] for p in points], [p[i] for p in points], s=12, alpha=0.4, label="scored candidates")
        if k == 2:
            front = pareto_front([p[:2] for p in points], tuple(weights[:2]))
            axis.plot([p[1] for p in front], [p[0] for p in front], "-", color="C3", label="Pareto front")
        for m, values in enumerate(members):
            if values is not None and len(values) == k and all(map(math.isfinite, values)):
                axis.scatter([values[j]], [values[i]], s=24, color="C3",
                             label="members (export --member K)" if m == 0 else None)
                axis.annotate(str(m), (values[j], values[i]), xytext=(3, 3), textcoords="offset points", fontsize=7)
        axis.set(xlabel=f"{names[j]} ({better[weights[j]]})", ylabel=f"{names[i]} ({better[weights[i]]})")
    for axis in list(axes.flat)[len(pairs):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(title or f"{len(points)} scored candidates")
    _save(figure, path)
    plt.close(figure)
    return True


def _step_weights(step: dict, n_sources: int) -> list[float]:
    """Each source's weight in one part of a plan (take: 1 for its source; slerp: 1 - t and t)."""
    if step["method"] == "take":
        shares = [1.0]
    elif step["method"] == "slerp":
        t = step.get("t", [0.0])[0]
        shares = [1 - t, t]
    else:
        shares = step.get("weight", [1.0] * len(step["sources"]))
    weights = [0.0] * n_sources
    for k, share in zip(step["sources"], shares):
        if k < n_sources:
            weights[k] = float(share)
    return weights


def source_weights(plans: list[dict], members: list[str], sources: list[str]) -> dict:
    """What ``sources.png`` draws: per member and part, each source's weight (or the source a choice takes).

    ``kind`` is ``choice`` (every step takes one source: ``cells`` hold source indices), ``two`` (two
    sources: ``cells`` hold the second source's share of the weight, ``text`` the weights) or ``many``
    (one row per member and source: ``cells`` hold the weights).
    """
    parts = max((list(plan) for plan in plans), key=len, default=[])
    choice = all(step["method"] == "take" for plan in plans for step in plan.values())
    rows, text, labels = [], [], []
    for member, plan in zip(members, plans):
        weights = [_step_weights(plan[part], len(sources)) if part in plan else None for part in parts]
        if choice:
            rows.append([None if w is None else float(w.index(max(w))) for w in weights])
            text.append(["" if w is None else f"{plan[part]['source_part'].removeprefix('layers.')}"
                         if plan[part]["source_part"] != part else "" for part, w in zip(parts, weights)])
            labels.append(member)
        elif len(sources) == 2:
            rows.append([None if w is None else (w[1] / (w[0] + w[1]) if w[0] + w[1] else 0.5) for w in weights])
            text.append(["" if w is None else f"{w[0]:.2f}\n{w[1]:.2f}" for w in weights])
            labels.append(member)
        else:
            for k, name in enumerate(sources):
                rows.append([None if w is None else w[k] for w in weights])
                text.append(["" if w is None else f"{w[k]:.2f}" for w in weights])
                labels.append(f"{member}: {name}")
    return {"kind": "choice" if choice else "two" if len(sources) == 2 else "many", "parts": parts,
            "rows": labels, "cells": rows, "text": text, "sources": sources}


def _sources(plt, data: dict, path: Path, title: str) -> None:
    from matplotlib.patches import Patch

    cells = [[math.nan if v is None else v for v in row] for row in data["cells"]]
    parts, sources = data["parts"], data["sources"]
    figure, axis = plt.subplots(figsize=(max(6, 0.45 * len(parts) + 3), 0.45 * len(cells) + 2))
    if data["kind"] == "choice":
        colours = plt.get_cmap("tab10")
        image = axis.imshow(cells, aspect="auto", cmap=colours, vmin=-0.5, vmax=9.5)
        axis.legend(handles=[Patch(color=colours(k), label=name) for k, name in enumerate(sources)],
                    loc="upper left", bbox_to_anchor=(1.01, 1.0), title="source")
    else:
        diverging = data["kind"] == "two"
        image = axis.imshow(cells, aspect="auto", cmap="RdBu_r" if diverging else "viridis", vmin=0,
                            vmax=1 if diverging else max(1.0, max((v for row in cells for v in row
                                                                   if not math.isnan(v)), default=1.0)))
        label = f"share of {sources[1]} (0: all {sources[0]})" if diverging else "weight"
        figure.colorbar(image, label=label)
    for i, row in enumerate(data["text"]):
        for j, value in enumerate(row):
            if value:
                axis.text(j, i, value, ha="center", va="center", fontsize=6)
    axis.set_xticks(range(len(parts)), parts, rotation=60, ha="right")
    axis.set_yticks(range(len(data["rows"])), data["rows"])
    axis.set_title(title)
    _save(figure, path)
    plt.close(figure)


def _read(run: Path) -> dict:
    """The run's checkpoint (and recipe and logbook when there): everything the plots need."""
    recipe_path, checkpoint_path, logbook_path = run / "recipe.json", run / CHECKPOINT_NAME, run / "logbook.csv"
    if not checkpoint_path.is_file():
        missing = (f"no recipe.json or {CHECKPOINT_NAME}" if not recipe_path.is_file()
                   else f"{CHECKPOINT_NAME} is missing")
        raise LLMMergeError(f"{run} holds no run to report on ({missing})")
    try:
        checkpoint = json.loads(checkpoint_path.read_text())
        recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else None
        rows = list(csv.DictReader(logbook_path.read_text().splitlines())) if logbook_path.is_file() else []
        layout = checkpoint["layout"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LLMMergeError(f"{run}: unreadable run files ({type(exc).__name__}: {exc})") from exc
    return {"checkpoint": checkpoint, "recipe": recipe, "rows": rows, "layout": layout}


def _tuples(value: object) -> object:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _plans(layout: dict, members: list[dict]) -> list[dict]:
    space = GenomeSpace(**{key: _tuples(value) for key, value in layout["space"].items()})
    family = get_family(layout["family"])
    plans = []
    for member in members:
        try:
            plans.append(family.decode(member["genome"], space).to_dict())
        except InvalidGenomeError:
            continue
    return plans


def write_report(run: Path) -> list[Path]:
    """Draw the plots of the run in ``run`` into ``run/report/``; return their paths. A run that has not
    finished is drawn from its checkpoint and says so in every title."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise LLMMergeError("plots need matplotlib: pip install 'deap-llmmerge[plots]'") from exc
    found = _read(run)
    layout, state = found["layout"], found["checkpoint"]["state"]
    objectives, weights = layout["objectives"], layout["weights"]
    done = found["recipe"] is not None
    title = "" if done else f"(unfinished: generation {state['generation']} of {layout['max_generations']})"
    folder = run / "report"
    folder.mkdir(exist_ok=True)
    written = [folder / "objectives.png"]
    _objectives(plt, found["rows"], objectives, written[0], title)
    points = [from_json_values(values, weights) for _, values in state["cache"]]
    members = state["halloffame"]
    values = [from_json_values(m["fitness"], weights) if m["fitness"] else None for m in members]
    if _pareto(plt, points, values, objectives, weights, folder / "pareto.png", title):
        written.append(folder / "pareto.png")
    plans = _plans(layout, members)
    names = [f"member {i}  " + ", ".join(f"{name} {value:.3g}" for name, value in zip(objectives, member["fitness"]))
             if member["fitness"] and all(v is not None for v in member["fitness"]) else f"member {i}"
             for i, member in enumerate(members)]
    data = source_weights(plans, names[:len(plans)], layout["sources"])
    front = "Pareto front" if layout["selection"] == "nsga2" else "hall of fame"
    _sources(plt, data, folder / "sources.png", f"what each part takes, {front} {title}".strip())
    atomic_write_text(folder / "sources.json", json.dumps(data, indent=1))
    written += [folder / "sources.png", folder / "sources.json"]
    if done and found["recipe"].get("paired"):
        atomic_write_text(folder / "paired.md", paired_table(found["recipe"]["paired"], found["recipe"].get("best_is")))
        written.append(folder / "paired.md")
    return written


def paired_table(paired: dict, best_is: str | None = None) -> str:
    """The best merge against each pure source and seeded recipe, as a Markdown table per item set."""
    lines = ["# The best merge, item by item, against what a user would try first", ""]
    if best_is:
        lines += [f"**The best candidate is {best_is} itself: no merge the search tried beat it.**", ""]
    lines += ["Mean of (best - other) per item, with its 95% paired-bootstrap interval (10,000 resamples of the "
              "items); `correct` is accuracy (text: the share of right tokens), `score` the graded score (multiple "
              "choice: the correct choice's margin; otherwise the mean log-likelihood per token).", ""]
    for where, rows in paired.items():
        lines += [f"## {where} items", "", "| against | benchmark | measure | best - other (95% CI) | better |",
                  "|---|---|---|---|---|"]
        lines += [f"| {row['against']} | {row['benchmark']} | {row['measure']} | {row['mean']:+.4f} "
                  f"[{row['ci95'][0]:+.4f}, {row['ci95'][1]:+.4f}] | {'yes' if row['better'] else 'no'} |"
                  for row in rows] or ["| (nothing to compare) | | | | |"]
        lines.append("")
    return "\n".join(lines)

