"""Scoring a population: every saving on (shared prefixes, logits only at scored positions) against naive
scoring (one full forward pass per individual, every logit), timed in the same run on the same data.

Model: a Llama of 8 layers, hidden 256, a 32k vocabulary; two sources that share a base. Data: 64 x 128
tokens. (a) a population of 32 from generation 10 of a real search (choice genome), (b) a random first
generation of 32, (c) one individual on a benchmark with labels on 10% of positions against a bare forward
pass of a prebuilt model computing every logit, (d) the share of layer forward passes that (a) saved.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_population.py [--device cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from deap_llmmerge import BenchmarkData, LLMMergeGA, make_toolbox


def sources(layers: int, hidden: int, vocab: int) -> list[LlamaForCausalLM]:
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                         max_position_embeddings=256)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).eval()
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.02)
        models.append(model)
    return models


def benchmark(n: int, length: int, vocab: int, labeled: float, seed: int) -> BenchmarkData:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=generator)
    labels = torch.full_like(ids, -100)
    start = int(length * (1 - labeled))
    labels[:, start:] = ids[:, start:]
    return BenchmarkData(ids, labels)


def timed(fn, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def population_ratio(models, data, population, device, batch_size) -> tuple[float, float, float, float]:
    """(seconds with every saving, seconds naive, layer passes saved / all, their ratio)."""
    saving = make_toolbox(models, data, "choice", device=device, batch_size=batch_size).evaluate.func
    naive = make_toolbox(models, data, "choice", device=device, batch_size=batch_size, savings=False).evaluate.func
    saving.prepare()
    naive.prepare()
    fast = timed(lambda: saving.score_genomes(population))
    slow = timed(lambda: naive.score_genomes(population))
    scorer = saving.state.scorer
    saved = scorer.layers_saved / max(1, scorer.layers_saved + scorer.layers_run)
    return fast, slow, saved, fast / slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = sources(args.layers, args.hidden, args.vocab)
    data = benchmark(args.sequences, args.length, args.vocab, 0.5, seed=0)
    batch = 16

    search = LLMMergeGA(models, benchmark(16, 64, args.vocab, 0.5, seed=1), population_size=args.population,
                        max_generations=10, mutation_rate=0.05, seed=0, device=args.device, batch_size=batch)
    search.run()
    generation10 = [list(ind) for ind in search.population]
    random.seed(1)
    first = [list(ind) for ind in search.toolbox.population(n=args.population)]
    late = population_ratio(models, data, generation10, args.device, batch)
    early = population_ratio(models, data, first, args.device, batch)

    sparse = benchmark(args.sequences, args.length, args.vocab, 0.1, seed=2)
    one = make_toolbox(models, sparse, "choice", device=args.device, batch_size=batch).evaluate.func
    genome = generation10[0]
    bare_model = make_toolbox(models, sparse, "choice", device=args.device).evaluate.func.independent_model(genome)
    ids = sparse.input_ids.to(args.device)

    @torch.inference_mode()
    def bare() -> None:
        for start in range(0, len(ids), batch):
            bare_model(input_ids=ids[start:start + batch])

    others = iter([genome, generation10[-1], first[-1]] * 3)
    single = timed(lambda: one.score_genomes([next(others)]), 3)  # each call merges other parts in
    bare_time = timed(bare, 3)

    params = sum(p.numel() for p in models[0].parameters()) / 1e6
    print(f"### Population scoring ({args.layers}-layer Llama, {params:.1f} M parameters, vocabulary {args.vocab}, "
          f"{args.sequences} x {args.length} tokens, population {args.population}, device {args.device})\n")
    print("| measurement | with every saving (s) | baseline (s) | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| (a) population of generation 10 vs naive scoring | {late[0]:.1f} | {late[1]:.1f} | **{late[3]:.2f}** "
          "| <= 0.4 |")
    print(f"| (b) random first generation vs naive scoring | {early[0]:.1f} | {early[1]:.1f} | **{early[3]:.2f}** "
          "| <= 1.0 |")
    print(f"| (c) one individual, labels on 10% of positions, vs a bare forward pass (every logit) | {single:.2f} "
          f"| {bare_time:.2f} | **{single / bare_time:.2f}** | <= 0.8 |")
    print(f"\n(d) layer forward passes saved in (a): **{late[2]:.0%}** (in (b): {early[2]:.0%}). Distinct merges "
          f"in the generation-10 population: {len({tuple(g) for g in generation10})} of {len(generation10)}.")


if __name__ == "__main__":
    main()
