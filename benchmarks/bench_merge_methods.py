"""Time to merge once with each method, here and with mergekit's in-process merge of the same recipe.

A Llama of about 58 M parameters (8 layers, hidden 512, vocabulary 32000, untied head), a base and two
"fine-tunes" (the base plus small random task vectors), saved as safetensors. Every part is merged with
the method and the same parameters (weights 0.6 / 0.4, density 0.5, t 0.4, gamma 0.01, epsilon 0.1).

Both sides are timed on the first merge of a fresh process, and after other merges in one process (as
one run_merge after another). Ours is also timed on the merge into the skeleton a search reuses (cold: a
new pool, nothing cached; warm: every later candidate) and on the whole job run_merge does (map the
sources, merge, save a safetensors checkpoint). mergekit runs in its own venv (.cache/mergekit-venv, made
on first use). One torch thread for both.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_merge_methods.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deap_llmmerge import MERGE_METHODS, PartMerge, SourcePool
from deap_llmmerge.models.engine import MergeEngine
from deap_llmmerge.models.mergekit_yaml import mergekit_config
from deap_llmmerge.models.plans import MergePlan
from deap_llmmerge.run.output import save_model

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "mergekit-venv"
HELPERS = ROOT / "benchmarks" / "helpers"
METHODS = ["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "della"]
PARAMS = {"weight": (0.6, 0.4), "density": (0.5, 0.5), "gamma": (0.01, 0.01), "epsilon": (0.1, 0.1), "t": (0.4,)}


def mergekit_python() -> Path | None:
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        for step in ([sys.executable, "-m", "venv", str(VENV)], [str(python), "-m", "pip", "install", "-q",
                     "torch==2.13.0"], [str(python), "-m", "pip", "install", "-q", "mergekit==0.1.5"]):
            if subprocess.run(step, capture_output=True).returncode != 0:
                return None
        (VENV / ".installed").touch()
    return python


def mergekit_seconds(python: Path, out: Path, configs: list[str], env: dict[str, str]) -> dict[str, float]:
    """``{method: seconds}`` of mergekit's run_merge on each config, one after another in one process (empty
    when it fails)."""
    done = subprocess.run([str(python), str(HELPERS / "mergekit_timing.py"), str(out), *configs],
                          capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}


def models(folder: Path, layers: int, hidden: int) -> list[Path]:
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    paths = []
    for i, scale in enumerate((0.0, 0.01, 0.01)):
        model = LlamaForCausalLM(config)
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * scale)
        model.save_pretrained(folder / f"m{i}")
        paths.append(folder / f"m{i}")
    return paths


def plan_for(method: str, pool: SourcePool, shift: float = 0.0) -> MergePlan:
    spec = MERGE_METHODS[method]
    sources = (0, 1)
    params = tuple((name, tuple(v + shift for v in PARAMS[name])) for name in (*spec.per_source, *spec.per_part))
    if spec.random:
        params += (("seed", (0.0,)),)
    base = pool.base_index if spec.needs_base else None  # the base model, given apart from the sources
    return MergePlan(tuple((part, PartMerge(method, sources, part, params, base)) for part in pool.part_names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = models(folder, args.layers, args.hidden)
        os.sync()  # the sources on disk, as a user's are: no writeback competes with the timed merges
        env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        first = {method: float(subprocess.run([sys.executable, str(HELPERS / "first_merge.py"), method, str(folder)],
                                              capture_output=True, text=True, check=True,
                                              env={**env, "PYTHONPATH": str(ROOT)}).stdout.split()[-1])
                 for method in METHODS}
        pool = SourcePool(paths[1:], base=paths[0])
        params = sum(t.numel() for t in pool.tensors[0].values()) / 1e6
        ours, warm, whole, configs = {}, {}, {}, []
        for method in METHODS:
            plan = plan_for(method, pool)
            cold_times, warm_times = [], []
            for repeat in range(args.repeats):
                fresh = SourcePool(paths[1:], base=paths[0])
                engine = MergeEngine(fresh, fresh.new_skeleton())
                started = time.perf_counter()
                engine.apply(plan)
                cold_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                engine.apply(plan_for(method, fresh, shift=0.05 * (repeat + 1)))
                warm_times.append(time.perf_counter() - started)
            ours[method], warm[method] = statistics.median(cold_times), statistics.median(warm_times)
            started = time.perf_counter()
            fresh = SourcePool(paths[1:], base=paths[0])
            model = MergeEngine(fresh, fresh.new_skeleton()).apply(plan)
            save_model(model, folder / f"ours-{method}")
            whole[method] = time.perf_counter() - started
            shutil.rmtree(folder / f"ours-{method}")  # (its pages not written back during the next timings)
            config = folder / f"{method}.yaml"
            config.write_text(mergekit_config(plan, [str(p) for p in paths[1:]] + [str(paths[0])], [args.layers] * 3,
                                              2, pool.base_index if method != "slerp" else None))
            configs.append(str(config))
        python = mergekit_python()
        theirs, theirs_first = {}, {}
        if python is not None:
            theirs = mergekit_seconds(python, folder / "mk", configs, env)
            for config in configs if theirs else ():
                theirs_first.update(mergekit_seconds(python, folder / "mk-first", [config], env))
    print(f"### Merging once, per method ({params:.0f} M parameters, 1 CPU thread)\n")
    print("First: the first merge of a fresh process, both sides (sources mapped and skeleton built before the "
          "clock starts, for ours). The other columns follow other merges in one process, as mergekit's "
          "`run_merge` calls do one after another: ours cold is a new source pool and skeleton (magnitude "
          "buckets and della's row ranks computed), warm every later candidate of a search (other "
          "parameters, the same sources), whole job maps the sources, merges and saves a checkpoint, as "
          "`run_merge` does. Ratios are mergekit's time over ours: first over first, the others over "
          "mergekit's in-sequence time. The sources are on disk before the first timing, and every saved "
          "output is deleted after its timing, so no writeback of an earlier file competes with a timing.\n")
    print("| method | ours first (s) | ours cold (s) | ours warm (s) | ours whole job (s) | mergekit first (s) "
          "| mergekit (s) | vs first | vs cold | vs warm | vs whole job |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method in METHODS:
        mk, mk_first = theirs.get(method), theirs_first.get(method)
        cells = [f"{first[method]:.2f}", f"{ours[method]:.2f}", f"{warm[method]:.2f}", f"{whole[method]:.2f}"]
        cells += [f"{mk_first:.2f}" if mk_first else "n/a", f"{mk:.2f}" if mk else "n/a"]
        cells += [f"{mk_first / first[method]:.1f}x" if mk_first else "n/a"]
        cells += [f"{mk / mine:.1f}x" if mk else "n/a" for mine in (ours[method], warm[method], whole[method])]
        print(f"| {method} | " + " | ".join(cells) + " |")
    if not theirs:
        print("\nmergekit could not be installed or run here: no comparison.")


if __name__ == "__main__":
    main()
