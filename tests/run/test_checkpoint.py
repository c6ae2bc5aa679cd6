"""Runs that survive: killed with SIGKILL after a checkpoint, resumed, identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import FailOnce, cli, tiny_benchmark, write_run_config
from helpers.logbooks import csv_rows, records

# The real command line, each generation slowed down so that the kill lands in the middle of the run.
SLOW_CLI = """
import sys, time
from deap_llmmerge.evolve import ga
from deap_llmmerge.run.cli import main
step = ga.LLMMergeGA.step
def slow_step(self):
    time.sleep(0.4)
    step(self)
ga.LLMMergeGA.step = slow_step
sys.exit(main(sys.argv[1:]))
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}




@pytest.fixture(scope="module")
def config(tmp_path_factory, saved_llamas):
    return write_run_config(tmp_path_factory.mktemp("resume"), saved_llamas, genome="blend",
                            ga={"population_size": 8, "max_generations": 8, "seed": 11})


def checkpoint_generation(folder):
    try:
        return json.loads((folder / "checkpoint.json").read_text())["state"]["generation"]
    except (FileNotFoundError, ValueError):
        return -1


def test_killed_run_resumes_to_the_uninterrupted_result(config, tmp_path):
    assert cli("run", config, "--output", tmp_path / "whole").returncode == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "--quiet", "run", str(config), "--output",
                                str(killed)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while checkpoint_generation(killed) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    stopped_at = checkpoint_generation(killed)
    assert 3 <= stopped_at < 8 and not (killed / "recipe.json").exists()

    resumed = cli("run", config, "--output", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole, again = (json.loads((folder / "recipe.json").read_text()) for folder in (tmp_path / "whole", killed))
    assert again["halloffame"] == whole["halloffame"]
    assert csv_rows(killed / "logbook.csv") == csv_rows(tmp_path / "whole" / "logbook.csv")
    import numpy as np  # every merge's per-item results survive the kill and the resume

    with np.load(tmp_path / "whole" / "item_results.npz") as a, np.load(killed / "item_results.npz") as b:
        assert sorted(a.files) == sorted(b.files) == ["benchmark/correct", "benchmark/score", "benchmark/scored"]
        assert all(np.array_equal(a[name], b[name]) for name in a.files)
        assert a["benchmark/scored"].all() and a["benchmark/correct"].shape == (len(whole["run"]) and
                                                                              whole["run"]["evaluations"], 12)
    assert again["paired"] == whole["paired"] and whole["paired"]["fitness"]


def test_a_finished_run_cannot_be_resumed_again(config, tmp_path):
    assert cli("run", config, "--output", tmp_path / "done").returncode == 0
    result = cli("run", config, "--output", tmp_path / "done", "--resume")
    assert result.returncode == 1 and "has already finished" in result.stderr


def test_force_resumes_with_a_changed_setting(config, tmp_path):
    out = tmp_path / "run"
    assert cli("run", config, "--output", out).returncode == 0
    (out / "recipe.json").unlink()
    longer = yaml.safe_load(config.read_text())
    longer["ga"]["max_generations"] = 10
    longer["benchmark"] = str(config.parent / "bench.pt")
    (tmp_path / "longer.yaml").write_text(yaml.safe_dump(longer))
    refused = cli("run", tmp_path / "longer.yaml", "--output", out, "--resume")
    assert refused.returncode == 1 and "'ga.max_generations' was 8, is now 10" in refused.stderr
    forced = cli("run", tmp_path / "longer.yaml", "--output", out, "--resume", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "logbook.csv").read_text().splitlines()[-1].startswith("10,")


def test_checkpoint_round_trip_keeps_the_loop_state():
    from conftest import tiny_model

    from deap_llmmerge import LLMMergeGA
    from deap_llmmerge.run.checkpoint import ga_state, restore_ga

    def make():
        return LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), population_size=6,
                          max_generations=5, seed=2)

    whole = make()
    whole.run()
    first = make()
    first.max_generations = 2
    first.run()
    saved = json.loads(json.dumps(ga_state(first)))
    second = make()
    restore_ga(second, saved)
    second.run()
    assert [(list(i), i.fitness.values) for i in second.halloffame] == \
        [(list(i), i.fitness.values) for i in whole.halloffame]
    assert records(second.logbook) == records(whole.logbook)


def test_failed_candidates_are_null_in_the_checkpoint_and_worst_after_restore():
    from conftest import tiny_model

    from deap_llmmerge import LLMMergeGA
    from deap_llmmerge.run.checkpoint import ga_state, restore_ga

    def make():
        return LLMMergeGA([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), population_size=6,
                          max_generations=1, seed=2, calculate_loss=FailOnce(3))

    ga = make()
    ga.run()
    state = json.loads(json.dumps(ga_state(ga), allow_nan=False))
    assert [None, None] in [values for _, values in state["cache"]]
    again = make()
    restore_ga(again, state)
    assert (float("-inf"), float("inf")) in again.cached_map.cache.values()
