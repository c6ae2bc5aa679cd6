"""The many-expert study: four LoRA experts of SmolLM2-135M-Instruct merged, evolved merges against tuned baselines.

Experts (experiments/many_experts_train.py, committed): science (ARC, SciQ), commonsense (PIQA), reading
(BoolQ) and social (Social IQa), one fixed LoRA recipe. Target: the mean over the four skills of
multiple-choice accuracy. Splits per skill (experiments/many_experts_data.py): search (the searches'
fitness), selection (picks each search's final member from its hall of fame, and the baselines' parameters)
and test (the table). Every number in the table is on the test split; nothing chosen looks at it.

- Baselines: the base, each expert, the uniform average, task arithmetic with one global lambda from a grid,
  TIES and DARE-TIES with lambda and density from a grid (the grid point best on the selection split), and
  each at mergekit's usual values (weight 1, density 0.5).
- Searches (``deap-llmmerge run --workers 2``, SCOOP; ``--quick``: one process): the ``methods`` genome
  per group of ten layers (task arithmetic: one weight per expert and group; TIES: a weight and a density)
  with the GA (racing on: a child stops once it is surely worse than the elite, item by item) and with
  CMA-ES; random search draws as many genomes of the task-arithmetic genome as the largest search scored.
  Each search's final member: the best on the selection split of the three best members of its hall of
  fame (``--quick``: its best); the evolved merge of the table: the best search final on the selection
  split. ``--all`` adds the TIES genome's GA (the committed full run has the two task-arithmetic searches).
- Statistics: paired bootstrap over test items (within skills, 10,000 resamples) of the evolved merge
  minus the best baseline (best on the test split itself, which favours the baselines) and minus random
  search's final member.

Results: experiments/results/many-experts/ (``--quick``: many-experts-quick/).

    .venv/bin/python experiments/many_experts.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from many_experts_data import SKILLS, splits  # noqa: E402
from many_experts_report import write_results  # noqa: E402
from many_experts_scoring import SplitScores  # noqa: E402
from many_experts_stats import select  # noqa: E402
from many_experts_train import experts as trained_experts  # noqa: E402
from smollm2_data import CACHE, ROOT, base_model, download, write_jsonl  # noqa: E402

BUDGET = {  # per search; workers: SCOOP workers of a search (quick: one process, its start costs less);
    # finalists: the best members of each search's hall of fame scored on the selection split
    "full": {"population": 8, "generations": 4, "workers": 2, "finalists": 3},
    "quick": {"population": 4, "generations": 1, "workers": 1, "finalists": 1},
}
GRIDS = {  # lambda values; (lambda, density) pairs
    "full": {"task_arithmetic": [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5],
             "ties": [(lam, d) for lam in (0.5, 1.0, 1.5) for d in (0.2, 0.5, 0.8)],
             "dare_ties": [(lam, d) for lam in (0.5, 1.0, 1.5) for d in (0.2, 0.5, 0.8)]},
    "quick": {"task_arithmetic": [0.3, 1.0], "ties": [(1.0, 0.5)], "dare_ties": [(1.0, 0.5)]},
}
GENOMES = {"task_arithmetic": {"genome": "methods", "method": "task_arithmetic", "genome_granularity": "group:10"},
           "ties": {"genome": "methods", "method": "ties", "genome_granularity": "group:10"}}
SEARCHES = {"GA, task arithmetic": ("task_arithmetic", "ga"), "CMA-ES, task arithmetic": ("task_arithmetic", "cmaes"),
            "GA, TIES": ("ties", "ga")}
FULL_SEARCHES = ("GA, task arithmetic", "CMA-ES, task arithmetic")  # --all adds the TIES genome's GA
RANDOM = "random search, task arithmetic"
DEFAULT_DENSITY = 0.5  # mergekit's README examples use weight 1 and density 0.5


def prepare(mode: str) -> dict:
    """Models, split files and the searches' base config (cached under .cache/many-experts/MODE)."""
    downloads = download()
    base = base_model(downloads)
    experts = trained_experts()
    work = CACHE.parent / "many-experts" / mode
    files: dict[str, dict[str, Path]] = {}
    for skill, parts in splits(downloads, mode).items():
        for split in ("search", "selection", "test"):
            files.setdefault(split, {})[skill] = write_jsonl(work / "data" / f"{split}-{skill}.jsonl", parts[split])
    config = {
        "models": [{"path": str(path), "name": f"{skill}-expert"} for skill, path in experts.items()],
        "base": str(base),
        "benchmark": {skill: {"path": str(path), "kind": "multiple_choice"} for skill, path in files["search"].items()},
        "objectives": {"mean": [f"{skill}.accuracy" for skill in SKILLS]},
        "batch_size": 16,
    }
    results = ROOT / "experiments" / "results" / ("many-experts" + ("-quick" if mode == "quick" else ""))
    return {"mode": mode, "base": base, "experts": experts, "work": work, "files": files, "config": config,
            "results": results, "budget": BUDGET[mode], "grids": GRIDS[mode]}


def part_names(base: Path) -> list[str]:
    from transformers import AutoConfig, AutoModelForCausalLM

    from deap_llmmerge.models.parts import split_parts

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return list(split_parts(model))


def baselines(setup: dict) -> dict[str, dict]:
    """Every baseline merge: ``{label: {"plan", "options", "family", "grid"}}``; ``family`` names the grid a
    tuned baseline is chosen from (None for the fixed ones)."""
    from deap_llmmerge.models.recipes import uniform_plan

    experts = len(setup["experts"])
    pool = SimpleNamespace(part_names=part_names(setup["base"]), num_sources=experts, base_index=experts)

    def plan(method: str, **params) -> dict:
        return uniform_plan(pool, method, **params).to_dict()

    def take(source: int) -> dict:
        return {part: {"method": "take", "sources": [source], "source_part": part} for part in pool.part_names}

    out = {"base": {"plan": take(experts), "options": {}, "family": None}}
    for k, skill in enumerate(setup["experts"]):
        out[f"{skill} expert"] = {"plan": take(k), "options": {}, "family": None}
    out["uniform average"] = {"plan": plan("linear", weight=1.0), "options": {}, "family": None}
    out["task arithmetic, mergekit values (lambda 1)"] = {"plan": plan("task_arithmetic", weight=1.0), "options": {},
                                                          "family": None}
    for method, name in (("ties", "TIES"), ("dare_ties", "DARE-TIES")):
        out[f"{name}, mergekit values (density {DEFAULT_DENSITY})"] = {
            "plan": plan(method, weight=1.0, density=DEFAULT_DENSITY), "options": {}, "family": None}
    for lam in setup["grids"]["task_arithmetic"]:
        out[f"task arithmetic, lambda {lam}"] = {"plan": plan("task_arithmetic", weight=lam), "options": {},
                                                 "family": "task arithmetic, tuned"}
    for method, name in (("ties", "TIES"), ("dare_ties", "DARE-TIES")):
        for lam, density in setup["grids"][method]:
            out[f"{name}, lambda {lam}, density {density}"] = {
                "plan": plan(method, weight=1.0, density=density), "options": {method: {"lambda": lam}},
                "family": f"{name}, tuned"}
    return out


def run_search(setup: dict, label: str) -> dict:
    """``deap-llmmerge run --workers N`` for one search; its recipe.json (a finished run is not run again, an
    unfinished one resumes)."""
    genome, algorithm = SEARCHES[label]
    name = label.lower().replace(", ", "-").replace(" ", "-")
    output = setup["work"] / "runs" / name
    if not (output / "recipe.json").exists():
        budget = setup["budget"]
        racing = {"fitness": {"racing": True}} if algorithm == "ga" else {}  # CMA-ES ranks every candidate
        config = {**setup["config"], **GENOMES[genome], **racing, "algorithm": algorithm,
                  "ga": {"population_size": budget["population"], "max_generations": budget["generations"],
                         "mutation_rate": 0.15, "elitism_rate": 0.1, "seed": 0}}
        path = setup["work"] / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        resume = ["--resume"] if (output / "checkpoint.json").exists() else ["--force"]
        started = time.time()
        print(f"search: {label}", flush=True)
        subprocess.run([sys.executable, "-m", "deap_llmmerge", "--quiet", "run", str(path), "--output", str(output),
                        "--workers", str(budget["workers"]), *resume], check=True)
        (output / "wall_seconds.txt").write_text(f"{time.time() - started:.0f}\n")
    recipe = json.loads((output / "recipe.json").read_text())
    recipe["wall_seconds"] = float((output / "wall_seconds.txt").read_text()) \
        if (output / "wall_seconds.txt").exists() else None
    recipe["folder"] = str(output)
    return recipe


def random_search(setup: dict, evaluations: int) -> dict:
    """``evaluations`` random genomes of the task-arithmetic genome scored on the search split (as many pool
    workers as a search has); its five best by fitness, best first, as a hall of fame (cached)."""
    out = setup["work"] / "runs" / f"random-{evaluations}.json"
    if out.exists():
        return json.loads(out.read_text())
    from deap_llmmerge import PoolMap
    from deap_llmmerge.run.config import RunConfig
    from deap_llmmerge.run.runner import build_ga

    print(f"search: {RANDOM} ({evaluations} genomes)", flush=True)
    config = RunConfig.model_validate({**setup["config"], **GENOMES["task_arithmetic"],
                                       "ga": {"population_size": 2, "max_generations": 0}})
    pool = PoolMap(setup["budget"]["workers"])
    started = time.time()
    try:
        ga = build_ga(config, pool)
        random.seed(1)
        genomes = [ga.toolbox.individual() for _ in range(evaluations)]
        fitness = list(ga.toolbox.map(ga.toolbox.evaluate, genomes))
        order = sorted(range(evaluations), key=lambda i: -fitness[i][0])[:5]
        record = {"halloffame": [{"genome": list(genomes[i]), "plan": ga.evaluator.decode(genomes[i]).to_dict(),
                                  "fitness": list(fitness[i])} for i in order],
                  "run": {"evaluations": evaluations}, "wall_seconds": time.time() - started}
    finally:
        pool.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record))
    return record


def _final(label: str, finals: dict[str, str]) -> str:
    """The table's name of a search's final member: ``GA, task arithmetic (hall of fame #1)``."""
    return f"{label} (hall of fame #{finals[label].rsplit('#', 1)[1]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small splits and budget (under 10 minutes)")
    parser.add_argument("--all", action="store_true", help="also the TIES genome's GA search")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    setup = prepare("quick" if args.quick else "full")
    print(f"models and data ready in {time.time() - started:.0f} s", flush=True)
    fixed = baselines(setup)
    scores = SplitScores(setup["work"], list(setup["experts"].values()), setup["base"],
                         {split: setup["files"][split] for split in ("selection", "test")})
    try:
        scores.score([(label, "selection", b["plan"], b["options"]) for label, b in fixed.items() if b["family"]],
                     "baseline grid, ")
        scores.close()  # the searches need the cores and the memory
        searches = tuple(SEARCHES) if args.all else FULL_SEARCHES
        runs = {label: run_search(setup, label) for label in searches}
        evaluations = max(run["run"]["evaluations"] for run in runs.values())
        runs[RANDOM] = random_search(setup, evaluations)
        count = setup["budget"]["finalists"]
        finalists = {label: [f"{label} #{i}" for i in range(len(run["halloffame"][:count]))]
                     for label, run in runs.items()}
        members = {f"{label} #{i}": member for label, run in runs.items()
                   for i, member in enumerate(run["halloffame"][:count])}
        scores.score([(name, "selection", member["plan"], {}) for name, member in members.items()], "finalists, ")
        selection = {label: scores.correct("selection", label) for label in scores.scores["selection"]}
        finals = {label: select(names, selection) for label, names in finalists.items()}
        tuned = {}
        for family in sorted({b["family"] for b in fixed.values() if b["family"]}):
            tuned[family] = select([label for label, b in fixed.items() if b["family"] == family], selection)
        table = {label: fixed[label] for label, b in fixed.items() if b["family"] is None}
        table.update({f"{family} ({choice})": {**fixed[choice], "selection_label": choice}
                      for family, choice in tuned.items()})
        table.update({_final(label, finals): {"plan": members[finals[label]]["plan"], "options": {},
                                              "selection_label": finals[label]} for label in runs})
        scores.score([(label, "test", entry["plan"], entry["options"]) for label, entry in table.items()], "table, ")
    finally:
        scores.close()
    evolved = select([_final(label, finals) for label in searches],
                     {_final(label, finals): selection[finals[label]] for label in searches})
    write_results(setup, scores, table, tuned, runs, finals, evolved, _final(RANDOM, finals),
                  command="python " + " ".join(["experiments/many_experts.py", *sys.argv[1:]]), started=started)
    print(f"results in {setup['results'].relative_to(ROOT)}; total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
