"""Cost of scoring one individual, as a ratio to a bare forward pass of an already-built model.

Both are timed in the same run on the same data: the bare pass is ``model(input_ids).logits`` over the
benchmark, nothing else; one evaluation is decode + in-place merge + the same forward pass + metrics.
Worst case: consecutive genomes differ in every part, so every weight is copied each time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_evaluation.py [--layers 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deap_llmmerge import make_toolbox


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_turn(toolbox, genomes: list) -> Callable[[], None]:
    """A call that scores the next genome of ``genomes`` (cycling) each time."""
    turn = itertools.cycle(genomes)
    return lambda: toolbox.evaluate(next(turn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = LlamaConfig(vocab_size=4096, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                         num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4)
    sources = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        sources.append(LlamaForCausalLM(config).eval())
    input_ids = torch.randint(0, 4096, (args.sequences, args.length))
    labels = input_ids.clone()
    labels[:, : args.length // 2] = -100
    batch_size = 16
    bare_model = sources[0].to(args.device)
    device_ids = input_ids.to(args.device)

    @torch.inference_mode()
    def bare() -> None:
        for start in range(0, len(device_ids), batch_size):
            bare_model(input_ids=device_ids[start:start + batch_size])

    params = sum(p.numel() for p in bare_model.parameters()) / 1e6
    bare_time = timed(bare, args.repeats)
    print(f"### One individual against a bare forward pass ({args.layers}-layer Llama, {params:.1f} M parameters, "
          f"{args.sequences} x {args.length} tokens, labels on half the positions, device {args.device})\n")
    print("Scoring = decode + in-place merge + forward pass + metrics (logits only at labeled positions); the "
          "bare pass computes every logit of an already-built model.\n")
    print(f"| scoring | ms | / bare pass ({bare_time * 1000:.0f} ms) |")
    print("|---|---|---|")
    for family in ("choice", "blend"):
        toolbox = make_toolbox(sources, (input_ids, labels), family, device=args.device, batch_size=batch_size)
        pure = [toolbox.pure(source=k) for k in (0, 1)]
        worst = timed(in_turn(toolbox, pure), args.repeats)
        print(f"| {family}, every part changes between candidates | {worst * 1000:.0f} | {worst / bare_time:.3f} |")
        random.seed(0)
        genomes = [toolbox.individual() for _ in range(args.repeats + 1)]
        typical = timed(in_turn(toolbox, genomes), args.repeats)
        print(f"| {family}, random genomes | {typical * 1000:.0f} | {typical / bare_time:.3f} |")


if __name__ == "__main__":
    main()
