"""Distributed scoring with real SCOOP workers and a real process pool: same results, failures survived."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import HELPERS, FailOnce, cli, tiny_benchmark, tiny_model
from helpers.logbooks import csv_rows

from deap_llmmerge import EvaluationError, LLMMergeGA
from deap_llmmerge.distributed import PoolMap
from deap_llmmerge.distributed.scoop import scoop_entry_path


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, saved_llamas):
    folder = tmp_path_factory.mktemp("distributed")
    torch.save(tiny_benchmark(), folder / "bench.pt")
    # Every process that scores raises: a sitecustomize (imported at the start of every process) breaks scoring.
    (folder / "failing").mkdir()
    (folder / "failing" / "sitecustomize.py").write_text(
        "from deap_llmmerge.scoring import evaluator as evaluation\n"
        "def fail(self, plans, fidelity=None):\n"
        "    raise RuntimeError('simulated failure in a worker')\n"
        "evaluation.Evaluator.score_plans = fail\n")
    config = {"models": [str(p) for p in saved_llamas], "benchmark": "bench.pt",
              "ga": {"population_size": 8, "max_generations": 3, "seed": 4}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", folder / "config.yaml", "--output", folder / "serial")
    assert result.returncode == 0, result.stderr
    return folder


def recipe(folder):
    return json.loads((folder / "recipe.json").read_text())


def test_two_scoop_workers_score_in_two_processes_and_match_the_serial_run(run_folder):
    result = cli("run", run_folder / "config.yaml", "--output", run_folder / "scoop", "--workers", 2)
    assert result.returncode == 0, result.stderr
    distributed, serial = recipe(run_folder / "scoop"), recipe(run_folder / "serial")
    assert distributed["run"]["processes"] == 2 and serial["run"]["processes"] == 1
    assert distributed["halloffame"] == serial["halloffame"]
    assert csv_rows(run_folder / "scoop" / "logbook.csv") == csv_rows(run_folder / "serial" / "logbook.csv")


def test_the_entry_script_runs_under_python_m_scoop(run_folder):
    printed = cli("scoop-entry")
    assert printed.stdout.strip() == str(scoop_entry_path())
    command = [sys.executable, "-m", "scoop", "-n", "2", printed.stdout.strip(), "--quiet", "run",
               run_folder / "config.yaml", "--output", run_folder / "direct"]
    subprocess.run(list(map(str, command)), capture_output=True, check=True)
    assert recipe(run_folder / "direct")["halloffame"] == recipe(run_folder / "serial")["halloffame"]


def test_failing_workers_make_the_run_exit_non_zero_with_the_cause(run_folder, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(run_folder / "failing"))
    result = cli("run", run_folder / "config.yaml", "--output", run_folder / "bad", "--workers", 2)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "evaluations failed in generation 0" in lines[0]
    assert "RuntimeError: simulated failure in a worker" in lines[0]


def test_pool_backend_matches_the_serial_run(run_folder):
    result = cli("run", run_folder / "config.yaml", "--output", run_folder / "pool", "--workers", 2,
                 "--backend", "pool")
    assert result.returncode == 0, result.stderr
    assert recipe(run_folder / "pool")["halloffame"] == recipe(run_folder / "serial")["halloffame"]
    assert recipe(run_folder / "pool")["run"]["processes"] == 2


def _sources():
    return [tiny_model("llama", 1), tiny_model("llama", 2)]


def test_one_failing_candidate_gets_the_worst_fitness_and_the_run_goes_on(caplog):
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=8, max_generations=2, seed=0,
                    calculate_loss=FailOnce(3))
    best = ga.run()
    assert ga.failed_evaluations == 1 and ga.generation == 2
    worst = [ind for ind in ga.cached_map.cache.values() if ind == (float("-inf"), float("inf"))]
    assert len(worst) == 1 and best.fitness.values != worst[0]
    assert "CUDA out of memory (simulated)" in caplog.text and "Traceback" in caplog.text


def test_too_many_failures_stop_the_run():
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=4, max_generations=2, seed=0,
                    calculate_loss=FailOnce(1), max_failed_share=0.0)
    with pytest.raises(EvaluationError, match="1 of 4 evaluations failed in generation 0; first: RuntimeError"):
        ga.run()


def test_pool_map_pickles_without_its_processes():
    import pickle

    pool = PoolMap(2)
    assert pickle.loads(pickle.dumps(pool)).workers == 2


def test_a_slow_scoop_worker_is_waited_for_not_duplicated():
    """SCOOP's root, idle while a worker still runs a task, must not re-send and redo that task (SCOOP 0.7's
    broker says every running task is lost after 2 s; see ``patient_scoop_resend``)."""
    helper = HELPERS / "scoop_slow_worker.py"
    done = subprocess.run([sys.executable, "-m", "scoop", "-n", "2", str(helper)], capture_output=True, text=True,
                          timeout=120)
    assert "Lost track" not in done.stderr, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "2", (done.stdout, done.stderr)  # both processes returned results


# Imported at the start of every process of a run: in the SCOOP workers other than the root, each candidate
# takes DEAP_LLMMERGE_TEST_SLOW seconds more; every process notes "pid genomes" for each share it scores.
SLOW_SHARES = """
import os, time
import scoop
from deap_llmmerge.scoring import evaluator as evaluation
score_plans = evaluation.Evaluator.score_plans
def noted_score_plans(self, genomes, *options):
    with open(os.environ["DEAP_LLMMERGE_TEST_SHARES"], "a") as log:
        log.write(f"{os.getpid()} {len(genomes)}\\n")
    if not getattr(scoop, "IS_ORIGIN", True):
        time.sleep(float(os.environ["DEAP_LLMMERGE_TEST_SLOW"]) * len(genomes))
    return score_plans(self, genomes, *options)
evaluation.Evaluator.score_plans = noted_score_plans
"""


def _slow_run(run_folder, tmp_path, name, slow):
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_SHARES)
    shares = tmp_path / f"{name}.shares"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path / "site"),
           "DEAP_LLMMERGE_TEST_SLOW": str(slow), "DEAP_LLMMERGE_TEST_SHARES": str(shares)}
    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "--quiet", "run",
                                str(run_folder / "config.yaml"), "--output", str(tmp_path / name), "--workers", "2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, shares


def _noted(shares):
    return [tuple(map(int, line.split())) for line in shares.read_text().splitlines()] if shares.exists() else []


def test_a_slow_live_worker_keeps_its_share_and_no_candidate_is_scored_twice(run_folder, tmp_path):
    process, shares = _slow_run(run_folder, tmp_path, "slow", slow=5.5)  # a share of 2 takes 11 s, beyond SILENT
    _, error = process.communicate(timeout=600)
    assert process.returncode == 0, error
    scored = recipe(tmp_path / "slow")
    assert sum(count for _, count in _noted(shares)) == scored["run"]["evaluations"], _noted(shares)
    assert len({pid for pid, _ in _noted(shares)}) == 2 and "again" not in error
    assert scored["halloffame"] == recipe(run_folder / "serial")["halloffame"]


def test_a_killed_worker_costs_seconds_not_minutes(run_folder, tmp_path):
    import os
    import signal
    import time

    process, shares = _slow_run(run_folder, tmp_path, "killed", slow=4)
    deadline = time.time() + 120
    while True:  # until the worker that is not SCOOP's origin (the root) has started a share
        workers = {pid for pid, _ in _noted(shares) if b"--origin" not in Path(f"/proc/{pid}/cmdline").read_bytes()}
        if workers:
            worker = workers.pop()
            break
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    killed = time.time()
    _, error = process.communicate(timeout=600)
    elapsed = time.time() - killed
    assert process.returncode == 0, error
    assert elapsed < 40, f"the run took {elapsed:.0f} s after a worker was killed"
    assert recipe(tmp_path / "killed")["halloffame"] == recipe(run_folder / "serial")["halloffame"]
