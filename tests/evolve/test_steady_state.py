"""The steady-state loop: the generational loop's budget and results file, exact resumes when serial (a
SIGKILL included), and a pool run that survives a killed worker."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import cli, tiny_benchmark, tiny_model, write_run_config
from helpers.logbooks import csv_rows, records

from deap_llmmerge import ConfigError, LLMMergeGA
from deap_llmmerge.run.checkpoint import ga_state, restore_ga

SOURCES = [tiny_model("llama", 1), tiny_model("llama", 2), tiny_model("llama", 3)]


def make(selection: str = "tournament", generations: int = 5) -> LLMMergeGA:
    return LLMMergeGA(SOURCES, tiny_benchmark(), population_size=6, max_generations=generations, seed=3,
                      genome="blend", selection=selection, loop="steady_state")


def hall(ga: LLMMergeGA) -> list:
    return [(list(ind), ind.fitness.values) for ind in ga.halloffame]


@pytest.mark.parametrize("selection", ["tournament", "nsga2"])
def test_a_serial_steady_state_run_resumes_exactly(selection):
    whole = make(selection)
    whole.run()
    first = make(selection)
    first.max_generations = 2
    first.run()
    second = make(selection)
    restore_ga(second, json.loads(json.dumps(ga_state(first))))
    second.run()
    assert hall(second) == hall(whole) and records(second.logbook) == records(whole.logbook)


def test_each_generation_enters_population_size_children_and_the_best_is_kept():
    ga = make(generations=4)
    ga.run()
    assert [record["gen"] for record in ga.logbook] == [0, 1, 2, 3, 4]
    assert sum(record["evals"] for record in ga.logbook) == ga.cached_map.evaluations <= 6 * 5
    best_so_far = [max(c["max"] for c in ga.logbook.chapters["accuracy"][: g + 1]) for g in range(5)]
    assert [c["max"] for c in ga.logbook.chapters["accuracy"]] == best_so_far  # the best never leaves
    assert ga.best.fitness.wvalues == max(ind.fitness.wvalues for ind in ga.population)


def test_steady_state_refuses_cmaes_and_cheap_fitness_in_one_line():
    with pytest.raises(ConfigError, match="steady_state .*algorithm cmaes"):
        LLMMergeGA(SOURCES, tiny_benchmark(), genome="blend", algorithm="cmaes", loop="steady_state")
    with pytest.raises(ConfigError, match="steady_state .*fitness"):
        LLMMergeGA(SOURCES, tiny_benchmark(), genome="blend", fitness={"racing": True}, loop="steady_state")


# Imported at the start of every process of a run: each scoring task notes "pid" in a file and, in a pool
# worker (not the main process), takes DEAP_LLMMERGE_TEST_SLOW seconds more.
SLOW_TASKS = """
import multiprocessing, os, time
from deap_llmmerge.scoring import evaluator as evaluation
score_plans = evaluation.Evaluator.score_plans
def noted_score_plans(self, genomes, *options):
    with open(os.environ["DEAP_LLMMERGE_TEST_SHARES"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    if multiprocessing.parent_process() is not None:
        time.sleep(float(os.environ.get("DEAP_LLMMERGE_TEST_SLOW", "0")))
    return score_plans(self, genomes, *options)
evaluation.Evaluator.score_plans = noted_score_plans
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory, saved_llamas):
    folder = tmp_path_factory.mktemp("steady")
    write_run_config(folder, saved_llamas, genome="blend",
                     ga={"population_size": 6, "max_generations": 6, "seed": 5, "loop": "steady_state"})
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(SLOW_TASKS)
    return folder


def checkpoint_generation(folder) -> int:
    try:
        return json.loads((folder / "checkpoint.json").read_text())["state"]["generation"]
    except (FileNotFoundError, ValueError):
        return -1


@pytest.mark.slow
def test_a_killed_serial_steady_state_run_resumes_to_the_uninterrupted_result(config, tmp_path):
    assert cli("run", config / "config.yaml", "--output", tmp_path / "whole").returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(config / "site"),
           "DEAP_LLMMERGE_TEST_SHARES": str(tmp_path / "tasks")}
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "--quiet", "run", str(config / "config.yaml"),
                                "--output", str(killed)], env={**env, "DEAP_LLMMERGE_TEST_SLOW": "0"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while checkpoint_generation(killed) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= checkpoint_generation(killed) < 6 and not (killed / "recipe.json").exists()
    resumed = cli("run", config / "config.yaml", "--output", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole, again = (json.loads((folder / "recipe.json").read_text()) for folder in (tmp_path / "whole", killed))
    assert again["halloffame"] == whole["halloffame"]
    assert csv_rows(killed / "logbook.csv") == csv_rows(tmp_path / "whole" / "logbook.csv")


@pytest.mark.slow
def test_a_pool_steady_state_run_survives_a_killed_worker(config, tmp_path):
    tasks = tmp_path / "tasks"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(config / "site"),
           "DEAP_LLMMERGE_TEST_SHARES": str(tasks), "DEAP_LLMMERGE_TEST_SLOW": "1"}
    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "--quiet", "run", str(config / "config.yaml"),
                                "--output", str(tmp_path / "pool"), "--workers", "2", "--backend", "pool"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tasks.exists() and tasks.read_text().strip()):
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    os.kill(int(tasks.read_text().split()[0]), signal.SIGKILL)
    _, error = process.communicate(timeout=600)
    assert process.returncode == 0, error
    assert "a pool worker died" in error
    recipe = json.loads((tmp_path / "pool" / "recipe.json").read_text())
    assert recipe["run"]["processes"] >= 2 and len(recipe["halloffame"]) == 5
    rows = csv_rows(tmp_path / "pool" / "logbook.csv")
    assert [row["gen"] for row in rows] == [str(g) for g in range(7)]
