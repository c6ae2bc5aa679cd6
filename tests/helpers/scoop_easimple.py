"""A DEAP user's script, as the DEAP documentation writes it: ``toolbox.register("map", futures.map)``.

    python -m scoop -n 2 scoop_easimple.py MODEL_A MODEL_B BENCH.pt OUT.json   (or --serial, without SCOOP)
"""

import json
import os
import pickle
import random
import sys
import time

import torch
from deap import algorithms, tools
from scoop import futures

from deap_llmmerge import load_benchmark, make_toolbox, scoop_map

torch.set_num_threads(1)


def process_id(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def worker_processes(toolbox) -> list[int]:
    """The processes SCOOP runs tasks in (asked until a second one answers: workers start at their pace)."""
    seen: set[int] = set()
    deadline = time.time() + 60
    while len(seen) < 2 and time.time() < deadline and "--serial" not in sys.argv:
        seen.update(toolbox.map(process_id, range(8)))
    return sorted(seen or {os.getpid()})


if __name__ == "__main__":
    model_a, model_b, bench, out = sys.argv[1:5]
    toolbox = make_toolbox([model_a, model_b], load_benchmark(bench), "choice")
    if "--serial" not in sys.argv:
        toolbox.register("map", futures.map)
    random.seed(0)
    population = toolbox.population(n=8)
    hall = tools.HallOfFame(3)
    algorithms.eaSimple(population, toolbox, cxpb=0.8, mutpb=0.5, ngen=3, halloffame=hall, verbose=False)
    processes = worker_processes(toolbox)
    # two toolboxes of one benchmark in one SCOOP run share its constant (set once)
    again = [list(ind) for ind in hall]
    scored = []
    for _ in range(2):
        other = make_toolbox([model_a, model_b], load_benchmark(bench), "choice",
                             base_map=scoop_map if "--serial" not in sys.argv else map)
        scored.append([list(values) for values in other.map(other.evaluate, again)])
    with open(out, "w") as handle:
        json.dump({"halloffame": [[list(ind), list(ind.fitness.values)] for ind in hall], "rescored": scored,
                   "processes": processes, "task_bytes": len(pickle.dumps(toolbox.evaluate))}, handle)
