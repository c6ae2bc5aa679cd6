"""SmolLM2-135M: candidates scored per minute with every saving, one process against two SCOOP workers and two
Ray actors, on 64 ARC-Easy items, same run; with the utilisation of each (the share of the workers' time
spent scoring).

Sources: the four LoRA experts of the many-expert study (committed under experiments/results/many-experts/),
each merged into SmolLM2-135M-Instruct on load. The population: 4 random choice genomes and a mutant of each
(offspring share parts with their parents), as in bench_smollm2.py. Each backend first scores an untimed
population, so that the workers' state (sources mapped, skeleton built) is ready.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_workers_smollm2.py
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
EXPERTS = ROOT / "experiments" / "results" / "many-experts" / "experts"

from bench_smollm2 import population  # noqa: E402  (the same population: 4 random genomes, a mutant of each)


def inputs() -> tuple[list[str], str, Path]:
    from smollm2_data import CACHE, base_model, download, splits, write_jsonl

    downloads = download()
    base = base_model(downloads)
    items = splits(downloads, "full")
    arc = write_jsonl(CACHE / "bench" / "arc_easy-64.jsonl", items["arc_easy"]["held_out"][:64])
    return [str(EXPERTS / skill) for skill in ("science", "commonsense", "reading", "social")], str(base), arc


def measure(models: list[str], base: str, arc: Path, base_map) -> dict[str, float]:
    from deap_llmmerge import build_benchmark, make_toolbox

    data = build_benchmark("multiple_choice", arc, base)
    toolbox = make_toolbox(models, data, "choice", batch_size=16, mutation_rate=0.1, base_model=base,
                           base_map=base_map)
    toolbox.map(toolbox.evaluate, population(toolbox, 99)[:4])  # build every worker's state
    genomes = population(toolbox, 0)
    started = time.perf_counter()
    toolbox.map(toolbox.evaluate, genomes)
    seconds = time.perf_counter() - started
    cached = toolbox.map.func
    return {"per_minute": len(genomes) / seconds * 60, "utilisation": cached.last_utilisation or 0.0,
            "processes": len(cached.processes)}


def main() -> None:
    torch.set_num_threads(1)
    if "--child" in sys.argv:
        from deap_llmmerge import scoop_map

        models, base, arc, out = json.loads(sys.argv[sys.argv.index("--child") + 1])
        Path(out).write_text(json.dumps(measure(models, base, Path(arc), scoop_map)))
        return
    models, base, arc = inputs()
    results = {"1 process": measure(models, base, arc, map)}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "two.json"
        done = subprocess.run([sys.executable, "-m", "scoop", "--quiet", "-n", "2", __file__, "--child",
                               json.dumps([models, base, str(arc), str(out)])], capture_output=True, text=True)
        if not out.exists():
            raise RuntimeError(f"the SCOOP measurement failed: {done.stderr.strip().splitlines()[-1:]}")
        results["2 SCOOP workers"] = json.loads(out.read_text())
    if importlib.util.find_spec("ray") is not None:
        from deap_llmmerge.distributed import RayMap

        ray_map = RayMap(2)
        try:
            results["2 Ray actors"] = measure(models, base, arc, ray_map)
        finally:
            ray_map.terminate()
    one = results["1 process"]["per_minute"]
    print("### SmolLM2-135M, every saving: candidates scored per minute (64 ARC-Easy items, 8 candidates, four LoRA "
          "experts merged on load, 1 CPU thread per process, worker start-up left out)\n")
    print("| scoring | per minute | speed-up | processes | utilisation |")
    print("|---|---|---|---|---|")
    for label, result in results.items():
        print(f"| {label} | {result['per_minute']:.2f} | {result['per_minute'] / one:.2f}x | {result['processes']} "
              f"| {result['utilisation']:.2f} |")
    if "2 Ray actors" in results:
        ratio = results["2 Ray actors"]["per_minute"] / results["2 SCOOP workers"]["per_minute"]
        print(f"\nRay / SCOOP throughput: {ratio:.2f}.")


if __name__ == "__main__":
    main()
