"""Runs that survive, part 2: a full disk, two runs on one folder, Ctrl-C and SIGTERM never cost a search."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, write_run_config
from helpers.logbooks import csv_rows

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Imported at the start of every process of a run (the SCOOP root and workers too): slows each generation
# down when DEAP_LLMMERGE_TEST_SLOW is set, and fails the safetensors write when DEAP_LLMMERGE_TEST_FULL is.
SITECUSTOMIZE = """
import os
if os.environ.get("DEAP_LLMMERGE_TEST_SLOW"):
    import time
    from deap_llmmerge.evolve import ga
    step = ga.LLMMergeGA.step
    def slow_step(self):
        time.sleep(float(os.environ["DEAP_LLMMERGE_TEST_SLOW"]))
        step(self)
    ga.LLMMergeGA.step = slow_step
if os.environ.get("DEAP_LLMMERGE_TEST_SIGNAL"):  # "N:PIDFILE": at the Nth candidate this process scores,
    import signal, time                            # SIGINT to the pid in PIDFILE (once per run, whoever is first)
    from deap_llmmerge.scoring import population as scoring
    at, pidfile = os.environ["DEAP_LLMMERGE_TEST_SIGNAL"].split(":", 1)
    score_one, calls = scoring.PopulationScorer._score_one, []
    def interrupted_score_one(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == int(at):
            try:
                os.close(os.open(pidfile + ".sent", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                while not os.path.exists(pidfile):
                    time.sleep(0.01)
                os.kill(int(open(pidfile).read()), signal.SIGINT)
                time.sleep(0.5)  # the signal lands while this candidate is being scored
        return score_one(self, *args, **kwargs)
    scoring.PopulationScorer._score_one = interrupted_score_one
if os.environ.get("DEAP_LLMMERGE_TEST_SIGNAL_SAVED"):  # PIDFILE: SIGINT to that pid once recipe.json is written
    import signal, time
    from deap_llmmerge.run import runner
    write = runner.atomic_write_text
    def write_then_signal(path, text):
        write(path, text)
        if path.name == "recipe.json":
            os.kill(int(open(os.environ["DEAP_LLMMERGE_TEST_SIGNAL_SAVED"]).read()), signal.SIGINT)
            time.sleep(2)
    runner.atomic_write_text = write_then_signal
if os.environ.get("DEAP_LLMMERGE_TEST_FULL"):
    import errno
    import safetensors.torch
    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))
    safetensors.torch.save_file = full
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory, saved_llamas):
    folder = tmp_path_factory.mktemp("survival")
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    for seed in (1, 2):
        write_run_config(folder, saved_llamas, f"config{seed}.yaml", genome="blend",
                         ga={"population_size": 8, "max_generations": 6, "seed": seed})
    assert cli("run", folder / "config1.yaml", "--output", folder / "whole").returncode == 0
    return folder


def start(folder, *args, slow=None, extra_env=None):
    env = {**ENV, "PYTHONPATH": str(folder / "site"), **(extra_env or {})}
    if slow:
        env["DEAP_LLMMERGE_TEST_SLOW"] = str(slow)
    return subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "--quiet", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def generation(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint.json").read_text())["state"]["generation"]
    except (OSError, ValueError, KeyError):
        return -1


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def same_result(a: Path, b: Path) -> None:
    first, second = (json.loads((x / "recipe.json").read_text()) for x in (a, b))
    assert first["halloffame"] == second["halloffame"] and first["plan"] == second["plan"]
    assert csv_rows(a / "logbook.csv") == csv_rows(b / "logbook.csv")


def test_two_runs_on_one_folder_one_is_refused_at_once(folder):
    out = folder / "shared"
    first = start(folder, "run", folder / "config1.yaml", "--output", out, slow=2)
    while generation(out) < 0:
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    started = time.time()
    second = start(folder, "run", folder / "config2.yaml", "--output", out)
    _, error = second.communicate(timeout=60)
    elapsed = time.time() - started
    resumed = start(folder, "run", folder / "config1.yaml", "--output", out, "--resume")
    _, resume_error = resumed.communicate(timeout=60)
    assert first.wait(timeout=120) == 0
    assert second.returncode == 1 and elapsed < 5, (elapsed, error)
    lines = error.strip().splitlines()
    assert len(lines) == 1 and f"{out} is in use by another run (process {first.pid})" in lines[0], error
    assert resumed.returncode == 1 and f"is in use by another run (process {first.pid})" in resume_error
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["seed"] == 1
    same_result(out, folder / "whole")


@pytest.mark.parametrize(("sig", "backend"), [(signal.SIGINT, "serial"), (signal.SIGTERM, "pool"),
                                              (signal.SIGTERM, "scoop")])  # Ctrl-C under SCOOP: the test below
def test_a_signal_stops_at_the_last_checkpoint_and_resume_finishes_the_run(folder, sig, backend):
    out = folder / f"stopped-{sig}-{backend}"
    workers = [] if backend == "serial" else ["--workers", 2, "--backend", backend]
    process = start(folder, "run", folder / "config1.yaml", "--output", out, *workers, slow=0.4)
    deadline = time.time() + 120
    while generation(out) < 2:
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    family = descendants(process.pid)
    process.send_signal(sig)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, error
    lines = error.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in error, error
    stopped = generation(out)
    assert lines[0] == (f"deap-llmmerge: interrupted ({signal.Signals(sig).name}) after generation {stopped} of 6; "
                        f"continue with --resume --output {out}")
    assert not (out / "recipe.json").exists()
    time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)], "processes left behind"
    resumed = cli("run", folder / "config1.yaml", "--output", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    same_result(out, folder / "whole")


@pytest.mark.parametrize(("backend", "at"), [("serial", 20), ("pool", 10), ("scoop", 10)])
def test_ctrl_c_while_a_candidate_is_scored_is_an_interruption_not_a_failed_candidate(folder, backend, at):
    out = folder / f"scoring-{backend}"
    pidfile = folder / f"scoring-{backend}.pid"
    workers = [] if backend == "serial" else ["--workers", 2, "--backend", backend]
    process = start(folder, "run", folder / "config1.yaml", "--output", out, *workers,
                    extra_env={"DEAP_LLMMERGE_TEST_SIGNAL": f"{at}:{pidfile}"})
    pidfile.write_text(str(process.pid))
    _, error = process.communicate(timeout=180)
    assert process.returncode == 130, error
    lines = error.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in error and "failed" not in error, error
    stopped = generation(out)
    assert lines[0] == (f"deap-llmmerge: interrupted (SIGINT) after generation {stopped} of 6; "
                        f"continue with --resume --output {out}")
    assert not (out / "recipe.json").exists() and 0 <= stopped < 6
    resumed = cli("run", folder / "config1.yaml", "--output", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    same_result(out, folder / "whole")


@pytest.mark.parametrize("backend", ["serial", "scoop"])
def test_ctrl_c_after_the_run_saved_its_results_says_so(folder, backend):
    out = folder / f"saved-{backend}"
    pidfile = folder / f"saved-{backend}.pid"
    workers = [] if backend == "serial" else ["--workers", 2]
    process = start(folder, "run", folder / "config1.yaml", "--output", out, *workers,
                    extra_env={"DEAP_LLMMERGE_TEST_SIGNAL_SAVED": str(pidfile)})
    pidfile.write_text(str(process.pid))
    _, error = process.communicate(timeout=180)
    assert process.returncode == 130, error
    assert error.strip().splitlines() == [f"deap-llmmerge: interrupted (SIGINT) after the run had finished; its "
                                          f"results are in {out}"]
    same_result(out, folder / "whole")


@pytest.fixture
def small_disk(tmp_path):
    """A real 150 KB tmpfs (room for the checkpoint, not for the model) where the tests may mount one (as
    root); otherwise None, and the write is made to fail."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_at_the_save_costs_no_search(folder, small_disk):
    out = (small_disk or folder / "simulated") / "run"
    run = start(folder, "run", folder / "config1.yaml", "--output", out,
                extra_env=None if small_disk else {"DEAP_LLMMERGE_TEST_FULL": "1"})
    _, error = run.communicate(timeout=120)
    assert run.returncode == 1
    lines = error.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in error, error
    assert f"cannot save the finished run into {out}: No space left on device" in lines[0]
    assert "run again with --resume to save it without searching again" in lines[0]
    assert not (out / "recipe.json").exists() and not (out / "best").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert generation(out) == 6
    if small_disk:
        subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    before = json.loads((out / "checkpoint.json").read_text())["state"]["evaluations"]
    resumed = cli("run", folder / "config1.yaml", "--output", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    same_result(out, folder / "whole")
    assert json.loads((out / "recipe.json").read_text())["run"]["evaluations"] == before
    best, again = (out / "best" / "model.safetensors", folder / "whole" / "best" / "model.safetensors")
    assert best.read_bytes() == again.read_bytes()
    shutil.rmtree(out)
