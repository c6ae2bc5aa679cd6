"""Cheap fitness on SmolLM2-135M: 500 multiple-choice items (100 each of ARC-Easy, ARC-Challenge, SciQ, PIQA,
BoolQ) and 40 candidates over the SmolLM2 study's quick QA and Shakespeare experts (ties genome over the
base: the pure sources, the default recipe, random merges and their children).

Measured in one run, one process, one torch thread:

- **shared contexts**: seconds per candidate with the choices as rows in the file's order (the path before
  packing, every other saving on), as rows in batches of one length, and packed (in batches of one length),
  on the same candidates, timed in turn;
- every candidate's per-item results on all 500 items (packed), written to ``--out`` (``items.npz``), from
  which ``analyse_cheap_fitness.py`` measures anchors and racing offline;
- **anchors**: seconds per candidate on 10% of the items (50 anchors), packed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cheap_fitness.py --out .cache/cheap-fitness
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

TASKS = ("arc_easy", "arc_challenge", "sciq", "piqa", "boolq")


def fitness_items(per_task: int) -> Path:
    """The last ``per_task`` items of each task in the study's shuffled order (the quick experts trained on
    none of them), as one JSONL file, tasks in turn."""
    from smollm2_data import CACHE, download, split, task_items, write_jsonl

    items = task_items(download())
    rows = []
    for task in TASKS:
        everything = split(items[task], {"all": len(items[task])})["all"]
        rows += everything[-per_task:]
    return write_jsonl(CACHE / "bench" / f"cheap-fitness-{per_task}.jsonl", rows)


def candidates(toolbox, count: int, seed: int = 0) -> list[list]:
    """Pure sources, the default recipe, random genomes and their mutated or crossed children."""
    random.seed(seed)
    container = type(toolbox.pure(source=0))
    population = [toolbox.pure(source=k) for k in range(2)] + \
        toolbox.evaluate.func.family.seeds(container, toolbox.evaluate.func.space)
    parents = [toolbox.individual() for _ in range((count - len(population)) // 2)]
    children = []
    for i in range(count - len(population) - len(parents)):
        a, b = toolbox.clone(parents[i % len(parents)]), toolbox.clone(parents[(i + 1) % len(parents)])
        toolbox.mate(a, b)
        toolbox.mutate(a)
        children.append(a)
    return [list(genome) for genome in population + parents + children]


def seconds_per_candidate(toolbox, genomes: list[list]) -> float:
    started = time.perf_counter()
    toolbox.map(toolbox.evaluate, genomes)
    return (time.perf_counter() - started) / len(genomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--timed", type=int, default=4, help="candidates timed with rows and packed")
    parser.add_argument("--timing-only", action="store_true", help="stop after the rows / packed timing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from smollm2_data import CACHE

    from deap_llmmerge import build_benchmark, make_toolbox
    from deap_llmmerge.scoring.objectives import SINGLE

    experts = [CACHE / "experts" / "quick" / name for name in ("qa", "shakespeare")]
    data = build_benchmark("multiple_choice", fitness_items(args.per_task), experts[0])
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"items": int(data.item.max()) + 1, "rows": len(data), "tasks": list(TASKS)}

    def toolbox_for(packing: bool, by_length: bool = True):
        toolbox = make_toolbox(experts, data, "methods", method="ties", base_model=CACHE / "base",
                               genome_granularity="group:10", objectives=["accuracy", "choice_loss"], batch_size=16)
        scorer = toolbox.evaluate.func.state.scorer
        if not (packing and by_length):
            scorer.packing, scorer.length_sorted = packing, by_length
            scorer.set_batch_size(scorer.batch_size)
        return toolbox

    packed = toolbox_for(True)
    genomes = candidates(packed, args.candidates)
    variants = {"rows, file order": toolbox_for(False, False), "rows": toolbox_for(False), "packed": packed}
    warm = genomes[-1:]  # a first candidate for each (their first merge pays page faults)
    for toolbox in variants.values():
        toolbox.map(toolbox.evaluate, warm)
    timed = genomes[-1 - args.timed:-1]  # merges (children), not pure sources: the merge is part of the cost
    times = {name: [] for name in variants}
    for genome in timed:  # in turn, so that anything else the machine does weighs on each alike
        for name, toolbox in variants.items():
            times[name].append(seconds_per_candidate(toolbox, [genome]))
    for name in variants:
        report[f"seconds per candidate, {name}"] = float(np.mean(times[name]))
    print(json.dumps(report), flush=True)
    if args.timing_only:
        (args.out / "timing-order.json").write_text(json.dumps({**report, "times": times}, indent=1))
        return 0
    started = time.perf_counter()
    for i, genome in enumerate(genomes):
        packed.map(packed.evaluate, [genome])
        print(f"candidate {i + 1}/{len(genomes)} ({time.perf_counter() - started:.0f} s)", flush=True)
    cache = packed.map.func
    keys = [cache.same.key(genome) for genome in genomes]
    items = [cache.items[key][SINGLE] for key in keys]
    np.savez(args.out / "items.npz", correct=np.stack([s.correct for s in items]),
             score=np.stack([s.score for s in items]),
             fitness=np.array([cache.cache[key] for key in keys], dtype=np.float64),
             task=np.repeat(np.arange(len(TASKS)), args.per_task))
    report["seconds for all candidates, packed"] = time.perf_counter() - started
    from deap_llmmerge.scoring.anchors import choose_anchors

    correct, score = np.stack([s.correct for s in items]), np.stack([s.score for s in items])
    anchors, weights = choose_anchors(correct[:10], score[:10], round(0.1 * correct.shape[1]))
    rows_of = torch.isin(data.item, torch.as_tensor(anchors)).nonzero().flatten()
    subset = data.subset(rows_of)
    few = make_toolbox(experts, subset, "methods", method="ties", base_model=CACHE / "base",
                       genome_granularity="group:10", objectives=["accuracy", "choice_loss"], batch_size=16)
    few.map(few.evaluate, warm)
    again = toolbox_for(True)  # packed on every item once more, beside the anchors (a fresh cache)
    again.map(again.evaluate, warm)
    report["anchors"] = len(anchors)
    times["anchors"], times["packed again"] = [], []
    for genome in timed:
        times["anchors"].append(seconds_per_candidate(few, [genome]))
        times["packed again"].append(seconds_per_candidate(again, [genome]))
    report["seconds per candidate, packed, on the anchors"] = float(np.mean(times["anchors"]))
    report["seconds per candidate, packed, again beside them"] = float(np.mean(times["packed again"]))
    report["times"] = times
    (args.out / "timing.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
