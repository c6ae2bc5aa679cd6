"""Plots of the SmolLM2 study: the held-out front against the baselines, and what the searches chose per part."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = {"base": "s", "QA expert": "^", "Shakespeare expert": "v", "uniform average": "D",
           "task arithmetic (mergekit defaults)": "P", "TIES (mergekit defaults)": "X"}


def front_plot(rows: dict[str, dict], path: Path) -> None:
    """Held-out QA accuracy against held-out Macbeth loss: baselines labeled, evolved merges by search."""
    figure, axis = plt.subplots(figsize=(8, 5.5))
    searches = sorted({label.split(":")[0] for label, row in rows.items() if row["kind"] != "baseline"})
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(searches)}
    for label, row in rows.items():
        x, y = row["play_loss"], row["qa_accuracy"]
        if row["kind"] == "baseline":
            axis.errorbar(x, y, xerr=row["play_loss_ci"], yerr=row["qa_accuracy_ci"], fmt=MARKERS.get(label, "o"),
                          color="black", markersize=8, capsize=2, label=label)
        else:
            search = label.split(":")[0]
            axis.plot(x, y, "o", color=colours[search], markersize=6, alpha=0.85,
                      label=search if label.startswith(search) and search not in axis.get_legend_handles_labels()[1]
                      else None)
    axis.set(xlabel="held-out Macbeth loss (lower is better)", ylabel="held-out QA accuracy (higher is better)",
             title="Held out: evolved merges and baselines (95% intervals on the baselines)")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _rows_of(recipe: dict) -> tuple[list[str], list[list[float]]]:
    plan = recipe["plan"]
    names = [s["name"] for s in recipe["sources"]]
    rows, labels = [], []
    steps = list(plan.values())
    if all(step["method"] == "take" for step in steps):
        labels.append("source (0 = " + names[0] + ")")
        rows.append([float(step["sources"][0]) for step in steps])
        return labels, rows
    for k, name in enumerate(names):
        labels.append(f"weight of {name}")
        values = []
        for step in steps:
            if step["method"] == "take":
                values.append(1.0 if step["sources"] == [k] else 0.0)
            elif k in step["sources"]:
                weights = step.get("weight", [0.0] * len(step["sources"]))
                values.append(float(weights[step["sources"].index(k)]))
            else:
                values.append(0.0)
        rows.append(values)
    return labels, rows


def weights_plot(runs: Path, path: Path) -> None:
    """Per part, what each search's best merge took: the source (choice) or each expert's weight."""
    recipes = {folder.name: json.loads((folder / "recipe.json").read_text())
               for folder in sorted(runs.iterdir()) if (folder / "recipe.json").exists()}
    labels, matrix, parts = [], [], None
    for name, recipe in recipes.items():
        parts = list(recipe["plan"])
        for label, row in zip(*_rows_of(recipe)):
            labels.append(f"{name}: {label}")
            matrix.append(row)
    if not matrix:
        return
    figure, axis = plt.subplots(figsize=(max(8, 0.3 * len(parts)), 0.35 * len(labels) + 1.5))
    image = axis.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=5,
                      color="white" if value < 0.5 else "black")
    axis.set_xticks(range(len(parts)), parts, rotation=90, fontsize=6)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    figure.colorbar(image, label="weight (choice: source index)")
    axis.set_title("What the best merge of each search takes per part")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
