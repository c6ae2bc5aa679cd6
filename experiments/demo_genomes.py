"""Every genome family on the demo's experts, same budget, held out: does searching depth (stack) help?

The demo's two experts (a letters expert trained on layers 0-2, a digits expert on layers 3-5 of one
6-layer base) are merged by the choice, blend, methods (ties over the base) and stack genomes, each with
the demo's GA settings and seed; every best merge is scored on the demo's held-out set. Results:
experiments/results/demo-genomes/results.md.

    .venv/bin/python experiments/demo_genomes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import CACHE, GA_SETTINGS  # noqa: E402
from experts import build_experts, mixed_benchmark  # noqa: E402

from deap_llmmerge import BenchmarkData, LLMMergeGA  # noqa: E402
from deap_llmmerge.scoring.metrics import benchmark_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {
    "choice": {"genome": "choice"},
    "blend": {"genome": "blend"},
    "methods (ties over the base)": {"genome": "methods", "method": "ties"},
    "stack (depth 4-9)": {"genome": "stack", "depth": (4, 9)},
}


def main() -> int:
    torch.set_num_threads(1)
    models = build_experts(CACHE / "models")
    sources = [models["letters-expert"], models["digits-expert"]]
    fitness = mixed_benchmark(100, seed=10)
    held_out = BenchmarkData(**mixed_benchmark(250, seed=20))
    held_acc = {}
    lines = ["| genome | evaluations | wall (s) | depth | fitness acc | fitness loss | held-out acc | held-out loss |",
             "|---|---|---|---|---|---|---|---|"]
    for label, settings in FAMILIES.items():
        started = time.time()
        extra = {"base_model": models["base"]} if settings["genome"] == "methods" else {}
        ga = LLMMergeGA(sources, fitness, batch_size=100, **GA_SETTINGS, **settings, **extra)
        best = ga.run()
        model = ga.merge_layers(best)
        held = benchmark_metrics(model, held_out, 128)
        held_acc[label] = held["accuracy"]
        lines.append(f"| {label} | {ga.cached_map.evaluations} | {time.time() - started:.0f} | "
                     f"{model.config.num_hidden_layers} | {best.fitness.values[0]:.3f} | {best.fitness.values[1]:.3f} "
                     f"| {held['accuracy']:.3f} | {held['loss']:.3f} |")
        print(lines[-1], flush=True)
    stack = held_acc.pop("stack (depth 4-9)")
    best = max(held_acc, key=held_acc.get)
    verdict = (f"Searching depth {'helped' if stack > held_acc[best] else 'did not help'} here: the stack's "
               f"held-out accuracy is {stack:.3f}, against {held_acc['choice']:.3f} for layer choice and "
               f"{held_acc[best]:.3f} for the best fixed-depth family ({best}).")
    print(verdict)
    out = ROOT / "experiments" / "results" / "demo-genomes"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(
        "# Every genome family on the demo's experts\n\n" + __doc__.split("\n\n")[1] + "\n\nCommand: "
        f"`python experiments/demo_genomes.py`; GA settings {GA_SETTINGS}.\n\n" + "\n".join(lines)
        + "\n\n" + verdict + "\n")
    print(f"wrote {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
