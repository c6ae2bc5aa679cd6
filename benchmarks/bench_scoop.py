"""Two workers against one process on an evaluation-dominated workload, whole CLI runs, same run: SCOOP (the
generational and the steady-state loop), the process pool and Ray (when installed), start-up included.

Saves two 8-layer Llamas (hidden 256) and a benchmark of 64 x 128 tokens, then times the same
``deap-llmmerge run`` (population 16, 4 generations) serially and with ``--workers 2`` on each backend,
checks that the generational runs found the serial hall of fame, and reports each run's utilisation per
generation (logbook.csv: the share of the workers' time spent scoring).

    .venv/bin/python benchmarks/bench_scoop.py [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM


def prepare(folder: Path) -> Path:
    config = LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=682, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=4)
    for seed in (1, 2):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder / f"model-{seed}")
    input_ids = torch.randint(0, 4096, (64, 128), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    labels[:, :64] = -100
    torch.save({"input_ids": input_ids, "labels": labels}, folder / "bench.pt")
    run_config = {"models": ["model-1", "model-2"], "benchmark": "bench.pt", "batch_size": 16,
                  "ga": {"population_size": 16, "max_generations": 4, "seed": 0}}
    (folder / "config.yaml").write_text(yaml.safe_dump(run_config))
    return folder / "config.yaml"


def timed_run(config: Path, output: Path, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deap_llmmerge", "--quiet", "run", str(config), "--output",
                    str(output), *extra], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def utilisation(output: Path) -> str:
    rows = list(csv.DictReader((output / "logbook.csv").read_text().splitlines()))
    return " ".join(row["utilisation"] or "-" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workers = str(args.workers)
    runs = [("serial", "serial", ()), ("scoop", f"SCOOP, {workers} workers", ("--workers", workers)),
            ("pool", f"pool, {workers} workers", ("--workers", workers, "--backend", "pool"))]
    if importlib.util.find_spec("ray") is not None:
        runs.append(("ray", f"Ray, {workers} actors (local Ray started by the run)",
                     ("--workers", workers, "--backend", "ray")))
    runs.append(("steady", f"SCOOP, {workers} workers, ga.loop steady_state", ("--workers", workers)))
    with tempfile.TemporaryDirectory() as folder:
        config = prepare(Path(folder))
        steady = Path(folder) / "steady.yaml"
        settings = yaml.safe_load(config.read_text())
        settings["ga"]["loop"] = "steady_state"
        steady.write_text(yaml.safe_dump(settings))
        seconds, recipes, used = {}, {}, {}
        for name, _, extra in runs:
            seconds[name] = timed_run(steady if name == "steady" else config, Path(folder) / name, *extra)
            recipes[name] = json.loads((Path(folder) / name / "recipe.json").read_text())
            used[name] = utilisation(Path(folder) / name)
    serial = seconds["serial"]
    print(f"### Two workers against one process ({recipes['serial']['run']['evaluations']} evaluations: population "
          "16, 4 generations, 8-layer Llama, 64 x 128 tokens, whole CLI runs, start-up included)\n")
    print("| run | s | speed-up | processes | same hall of fame | utilisation per generation |")
    print("|---|---|---|---|---|---|")
    for name, label, _ in runs:
        same = "-" if name in ("serial", "steady") else recipes[name]["halloffame"] == recipes["serial"]["halloffame"]
        print(f"| {label} | {seconds[name]:.1f} | {serial / seconds[name]:.2f}x | {recipes[name]['run']['processes']} "
              f"| {same} | {used[name]} |")
    if "ray" in seconds:
        print(f"\nRay / SCOOP time: {seconds['ray'] / seconds['scoop']:.2f}.")


if __name__ == "__main__":
    main()
