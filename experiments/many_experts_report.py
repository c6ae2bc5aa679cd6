"""The many-expert study's results folder: table, paired statistics, summary.json, per-item test results,
a recipe for every merge in the table, the searches' run files and two plots."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
from many_experts_data import SIZES, SKILLS
from many_experts_stats import paired_bootstrap_by_skill, target
from many_experts_train import RECIPE


def _slug(label: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in label.lower())
    return "-".join(part for part in keep.split("-") if part)


def _interval(correct: dict[str, list[int]]) -> float:
    """Half-width of the normal 95% interval of the target (a mean of per-skill shares)."""
    variance = sum(np.var(v) / len(v) for v in correct.values()) / len(correct) ** 2
    return 1.96 * math.sqrt(variance)


def _recipe(setup: dict, entry: dict, folder: Path) -> None:
    """recipe.json that ``deap-llmmerge export`` rebuilds from the committed experts and the cached base."""
    from deap_llmmerge.models.loading import sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    experts = list(setup["experts"].items())
    up = Path(*[".."] * len(folder.relative_to(setup["root"]).parts))

    def relative(path: Path) -> str:
        return str(up / path.relative_to(setup["root"]))

    recipe = {"plan": entry["plan"], "fitness": None, "objectives": [],
              "sources": [{"path": relative(path), "name": f"{skill}-expert", "sha256": sha256_of(path)}
                          for skill, path in experts],
              "base": {"path": relative(setup["base"]), "sha256": sha256_of(setup["base"]), "index": len(experts)},
              "config": {"method_options": entry.get("options") or {}}}
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")


def _plots(out: Path, rows: dict, evolved_plan: dict, experts: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(labels) + 1.5))
    for j, skill in enumerate(SKILLS):
        ax.barh(np.arange(len(labels)) + (j - 1.5) * 0.2, [rows[label]["skills"][skill] for label in labels],
                height=0.2, label=skill)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "skills.png", dpi=110)
    plt.close(fig)
    parts = list(evolved_plan)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for k, skill in enumerate(experts):
        values = [evolved_plan[part].get("weight", [math.nan] * len(experts))[k]
                  if k in evolved_plan[part]["sources"] else 0.0 for part in parts]
        ax.plot(range(len(parts)), values, marker=".", label=f"{skill} expert")
        if "density" in evolved_plan[parts[0]]:
            ax.plot(range(len(parts)), [evolved_plan[p]["density"][k] for p in parts], ls=":", lw=1)
    ax.set_xticks(range(len(parts)), [p.replace("layers.", "") for p in parts], fontsize=6)
    ax.set_xlabel("part (embeddings, decoder layers, final norm and head); dotted: TIES density")
    ax.set_ylabel("task-vector weight")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "weights.png", dpi=110)
    plt.close(fig)


def write_results(setup: dict, scores, table: dict, tuned: dict, runs: dict, finals: dict, evolved: str,
                  random_label: str, command: str, started: float) -> None:
    out: Path = setup["results"]
    out.mkdir(parents=True, exist_ok=True)
    setup = {**setup, "root": out.parents[2]}
    searched = {label for label, entry in table.items() if entry.get("selection_label") in finals.values()}
    rows = {}
    for label, entry in table.items():
        correct = scores.correct("test", label)
        chosen = entry.get("selection_label")
        selection = None if chosen is None else target(scores.correct("selection", chosen))
        rows[label] = {"test": target(correct), "ci95": _interval(correct), "selection": selection,
                       "skills": {skill: float(np.mean(v)) for skill, v in correct.items()}}
    baselines = [label for label in table if label not in searched]
    best_baseline = max(baselines, key=lambda label: rows[label]["test"])
    test = {label: scores.correct("test", label) for label in table}
    versus = {label: paired_bootstrap_by_skill(test[evolved], test[label]) for label in table if label != evolved}
    items = sum(len(v) for v in test[evolved].values())
    summary = {
        "experts": len(setup["experts"]), "test_items": items,
        "target": "mean over skills (science, commonsense, reading, social) of multiple-choice accuracy, test split",
        "evolved": {"name": evolved, "test": rows[evolved]["test"]},
        "best_baseline": {"name": best_baseline, "test": rows[best_baseline]["test"]},
        "paired_vs_best_baseline": {"mean": versus[best_baseline][0], "ci95": list(versus[best_baseline][1:])},
        "paired_vs_random": {"mean": versus[random_label][0], "ci95": list(versus[random_label][1:])},
        "evaluations": {label: run["run"]["evaluations"] for label, run in runs.items()},
        "wall_seconds": round(time.time() - started),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "test-items.json").write_text(json.dumps(
        {label: {skill: scores.scores["test"][label][skill] for skill in SKILLS} for label in table}) + "\n")
    for label, entry in table.items():
        _recipe(setup, entry, out / "recipes" / _slug(label))
    for label, run in runs.items():
        folder = out / "runs" / _slug(label)
        folder.mkdir(parents=True, exist_ok=True)
        if "folder" in run:
            for name in ("recipe.json", "logbook.csv"):
                shutil.copy(Path(run["folder"]) / name, folder / name)
        else:
            (folder / "random-search.json").write_text(json.dumps(run, indent=1) + "\n")
    _plots(out, rows, table[evolved]["plan"], list(setup["experts"]))
    _markdown(out, setup, rows, summary, versus, tuned, runs, finals, command)


def _markdown(out: Path, setup: dict, rows: dict, summary: dict, versus: dict, tuned: dict, runs: dict, finals: dict,
              command: str) -> None:
    sizes = SIZES[setup["mode"]]
    d, (lo, hi) = summary["paired_vs_best_baseline"]["mean"], summary["paired_vs_best_baseline"]["ci95"]
    verdict = "beats" if lo > 0 else "does not beat"
    lines = [
        "# Many experts: four LoRA experts of SmolLM2-135M-Instruct, evolved merges against tuned baselines", "",
        f"Command: `{command}`; wall time {summary['wall_seconds']} s on 2 CPU cores (experts cached).", "",
        f"Test split: {sizes['test']} items per skill, {summary['test_items']} in all; selection split "
        f"{sizes['selection']} per skill; search split {sizes['search']} per skill (disjoint by question text). "
        "Target: mean over the four skills of accuracy. Every figure below is on the test split unless named.", "",
        f"**The evolved merge ({summary['evolved']['name']}) {verdict} the best baseline "
        f"({summary['best_baseline']['name']}) on the test split: {d:+.4f}, paired 95% interval "
        f"[{lo:+.4f}, {hi:+.4f}].** Against random search with the same number of evaluations: "
        f"{summary['paired_vs_random']['mean']:+.4f} [{summary['paired_vs_random']['ci95'][0]:+.4f}, "
        f"{summary['paired_vs_random']['ci95'][1]:+.4f}].", "",
        "| model | target (95% CI) | " + " | ".join(SKILLS) + " | selection target | evolved - this (paired 95% CI) |",
        "|---|---|" + "---|" * len(SKILLS) + "---|---|",
    ]
    for label, row in rows.items():
        pair = versus.get(label)
        paired = "" if pair is None else f"{pair[0]:+.4f} [{pair[1]:+.4f}, {pair[2]:+.4f}]"
        selection = "" if row["selection"] is None else f"{row['selection']:.4f}"
        lines.append(f"| {label} | {row['test']:.4f} ± {row['ci95']:.4f} | "
                     + " | ".join(f"{row['skills'][s]:.3f}" for s in SKILLS) + f" | {selection} | {paired} |")
    lines += ["", "Tuned baselines: the grid point with the best selection target ("
              + "; ".join(f"{family}: {choice}" for family, choice in tuned.items()) + "). Searches: "
              + "; ".join(f"{label}: {run['run']['evaluations']} evaluations, final member {finals[label]}"
                          for label, run in runs.items()) + ".", "",
              "Experts: LoRA, " + ", ".join(f"{k} {v}" for k, v in RECIPE.items())
              + " (experiments/many_experts_train.py).",
              "", "Files: `summary.json`; `test-items.json` (per model and skill, 0/1 per test item and the margin of "
              "the right choice); `recipes/NAME/recipe.json` for every merge in the table (`deap-llmmerge export "
              "experiments/results/many-experts/recipes/NAME OUT`, after the study has cached the base); "
              "`runs/` (each search's recipe.json and logbook); `skills.png` (per-skill test accuracy of every "
              "model); `weights.png` (the evolved merge's weight per expert and part).", ""]
    (out / "results.md").write_text("\n".join(lines))
