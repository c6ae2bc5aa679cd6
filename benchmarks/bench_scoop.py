"""Speed-up of SCOOP workers over the serial run, on an evaluation-dominated workload, same run.

Saves two 8-layer Llamas (hidden 256) and a benchmark of 64 x 128 tokens, then times the same
``deap-llmmerge run`` (population 16, 4 generations) serially and with ``--workers 2`` (SCOOP start-up
included), and checks that both found the same hall of fame.

    .venv/bin/python benchmarks/bench_scoop.py [--workers 2]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = prepare(Path(folder))
        serial = timed_run(config, Path(folder) / "serial")
        distributed = timed_run(config, Path(folder) / "scoop", "--workers", str(args.workers))
        recipes = [json.loads((Path(folder) / name / "recipe.json").read_text()) for name in ("serial", "scoop")]
    same = recipes[0]["halloffame"] == recipes[1]["halloffame"]
    print(f"### SCOOP workers against one process ({recipes[0]['run']['evaluations']} evaluations: population 16, "
          "4 generations, 8-layer Llama, 64 x 128 tokens, SCOOP start-up included)\n")
    print("| run | s | speed-up |")
    print("|---|---|---|")
    print(f"| serial | {serial:.1f} | 1.00 |")
    print(f"| SCOOP, {args.workers} workers ({recipes[1]['run']['processes']} processes scored) | {distributed:.1f} "
          f"| {serial / distributed:.2f}x |")
    print(f"\nSame hall of fame: {same}.")


if __name__ == "__main__":
    main()
