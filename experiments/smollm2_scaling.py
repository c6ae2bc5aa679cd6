"""Is task arithmetic at mergekit's defaults beatable by scaling the task vectors? A grid, held out.

Every merge here is ``base + w_qa * (QA expert - base) + w_play * (Shakespeare expert - base)`` in every part
(deap-llmmerge's ``task_arithmetic``, normalisation off), for a grid of global weights around mergekit's
default (1, 1), scored on the study's held-out items and *Macbeth* exactly as the study scores them. No
search: it tells whether a merge in this family beats the default on both held-out tasks at all, which
is what a search over it could hope to find. The experts, data and held-out files are the study's (run
smollm2_study.py with the same options first; they are cached).

    .venv/bin/python experiments/smollm2_scaling.py [--gentle-experts]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smollm2_data import ROOT  # noqa: E402
from smollm2_study import held_out_data, prepare, score_held_out  # noqa: E402

GRID = [(1.0, 1.0), (1.1, 1.0), (1.0, 1.1), (1.1, 1.1), (0.9, 1.2), (1.3, 1.0), (1.0, 1.3), (1.25, 1.25),
        (1.2, 1.4), (1.4, 1.2), (1.5, 1.5), (0.8, 0.8)]


def _score(task: tuple) -> tuple[tuple[float, float], dict]:
    weights, setup, data = task
    from transformers.utils import logging

    from deap_llmmerge import merge_models

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.set_num_threads(1)
    experts = setup["experts"]
    model = merge_models([experts["qa"], experts["shakespeare"]], "task_arithmetic", base_model=setup["base"],
                         weight=list(weights)).eval()
    return weights, score_held_out(model, data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gentle-experts", action="store_true", help="the gentle experts' study (as smollm2_study.py)")
    parser.add_argument("--fitness-items", type=int, default=32, help="names the study's folder (as smollm2_study.py)")
    parser.add_argument("--qa-objective", default="choice_loss", help="names the study's folder (as smollm2_study.py)")
    args = parser.parse_args()
    started = time.time()
    setup = prepare("full", args.fitness_items, None, args.qa_objective, args.gentle_experts)
    out = ROOT / "experiments" / "results" / f"{setup['results'].name}-scaling"
    out.mkdir(parents=True, exist_ok=True)
    saved = json.loads((out / "scores.json").read_text()) if (out / "scores.json").exists() else {"scores": []}
    scores = {tuple(entry.pop("weights")): entry for entry in saved["scores"]}  # a rerun only writes the table
    todo = [weights for weights in GRID if weights not in scores]
    if todo:
        data = held_out_data(setup)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            scores.update(pool.imap_unordered(_score, [(weights, setup, data) for weights in todo]))
        saved["seconds"] = round(time.time() - started)
        saved["scores"] = [{"weights": list(w), **scores[w]} for w in GRID]
        (out / "scores.json").write_text(json.dumps(saved, indent=1))
    default = scores[(1.0, 1.0)]
    lines = [
        "# Task arithmetic with scaled task vectors, held out",
        "",
        f"Command: `python experiments/smollm2_scaling.py {' '.join(sys.argv[1:])}`, {saved['seconds']} s "
        f"on this machine (2 processes). Experts and held-out data: {setup['results'].name}. Every merge is "
        "base + w_QA (QA expert - base) + w_play (Shakespeare expert - base) in every part; (1, 1) is task "
        "arithmetic at mergekit's defaults.",
        "",
        "| w_QA | w_play | held-out QA accuracy (95% CI) | held-out Macbeth loss (95% CI) | beats (1, 1) on both |",
        "|---|---|---|---|---|",
    ]
    winners = [w for w in GRID if scores[w]["qa_accuracy"] > default["qa_accuracy"]
               and scores[w]["play_loss"] < default["play_loss"]]
    for weights in GRID:
        s = scores[weights]
        verdict = "(mergekit's default)" if weights == (1.0, 1.0) else "yes" if weights in winners else "no"
        lines.append(f"| {weights[0]:g} | {weights[1]:g} | {s['qa_accuracy']:.3f} ± {s['qa_accuracy_ci']:.3f} | "
                     f"{s['play_loss']:.3f} ± {s['play_loss_ci']:.3f} | {verdict} |")
    lines += ["", f"{len(winners)} of {len(GRID) - 1} scaled merges beat mergekit's default on both held-out tasks"
              + (f": {', '.join(str(w) for w in winners)}." if winners else ".")]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"results in {(out / 'results.md').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
