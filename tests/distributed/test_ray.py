"""The Ray backend with a real local Ray and a real two-node cluster: the serial run's results, a killed actor
survived, Ctrl-C ends the run and every Ray process it started. Skipped, with the reason, without Ray."""

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

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'deap-llmmerge[ray]')")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one xdist worker runs them in turn

# Imported at the start of every process (Ray's workers too): each share notes "pid genomes" in a file and,
# in a Ray actor, sleeps DEAP_LLMMERGE_TEST_SLOW seconds per genome.
SLOW_SHARES = """
import os, time
from deap_llmmerge.scoring import evaluator as evaluation
score_plans = evaluation.Evaluator.score_plans
def noted_score_plans(self, genomes, *options):
    with open(os.environ["DEAP_LLMMERGE_TEST_SHARES"], "a") as log:
        log.write(f"{os.getpid()} {len(genomes)}\\n")
    time.sleep(float(os.environ.get("DEAP_LLMMERGE_TEST_SLOW", "0")) * len(genomes))
    return score_plans(self, genomes, *options)
evaluation.Evaluator.score_plans = noted_score_plans
"""


def ray_processes() -> set[int]:
    """Pids of Ray's own processes on this machine (raylet, GCS, workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"raylet" in command or b"gcs_server" in command or command.startswith(b"ray::"):
                found.add(int(entry.name))
    return found


@pytest.fixture(scope="module")
def ray_folder(tmp_path_factory, saved_llamas):
    folder = tmp_path_factory.mktemp("ray")
    write_run_config(folder, saved_llamas, ga={"population_size": 8, "max_generations": 3, "seed": 4})
    result = cli("run", folder / "config.yaml", "--output", folder / "serial")
    assert result.returncode == 0, result.stderr
    (folder / "site").mkdir()
    (folder / "site" / "sitecustomize.py").write_text(SLOW_SHARES)
    return folder


def recipe(folder: Path) -> dict:
    return json.loads((folder / "recipe.json").read_text())


def slow_run(folder: Path, name: str, slow: float, *extra: str) -> tuple[subprocess.Popen, Path]:
    shares = folder / f"{name}.shares"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(folder / "site"),
           "DEAP_LLMMERGE_TEST_SLOW": str(slow), "DEAP_LLMMERGE_TEST_SHARES": str(shares)}
    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "--quiet", "run", str(folder / "config.yaml"),
                                "--output", str(folder / name), "--backend", "ray", "--workers", "2", *extra],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, shares


def assert_gone(before: set[int]) -> None:
    """No Ray process started since ``before`` is left (within 20 s: Ray's processes take a moment to end)."""
    deadline = time.time() + 20
    while ray_processes() - before and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before, "Ray processes outlived the run"


def noted(shares: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in shares.read_text().splitlines()] if shares.exists() else []


def wait_for_share(process: subprocess.Popen, shares: Path, timeout: float = 120) -> int:
    """The pid of the first Ray actor that starts a share."""
    deadline = time.time() + timeout
    while not noted(shares):
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    return noted(shares)[0][0]


def test_two_ray_actors_give_the_serial_run_and_leave_no_ray_process(ray_folder):
    before = ray_processes()
    process, shares = slow_run(ray_folder, "local", 0)
    _, error = process.communicate(timeout=600)
    assert process.returncode == 0, error
    assert recipe(ray_folder / "local")["halloffame"] == recipe(ray_folder / "serial")["halloffame"]
    assert len({pid for pid, _ in noted(shares)}) == 2 and recipe(ray_folder / "local")["run"]["processes"] == 2
    assert_gone(before)


def test_a_killed_ray_actor_has_its_share_run_again(ray_folder):
    process, shares = slow_run(ray_folder, "killed", 2)
    os.kill(wait_for_share(process, shares), signal.SIGKILL)
    _, error = process.communicate(timeout=600)
    assert process.returncode == 0, error
    assert recipe(ray_folder / "killed")["halloffame"] == recipe(ray_folder / "serial")["halloffame"]


def test_ctrl_c_exits_130_in_one_line_and_ends_every_ray_process(ray_folder):
    before = ray_processes()
    process, shares = slow_run(ray_folder, "interrupted", 5)
    wait_for_share(process, shares)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert len(error.strip().splitlines()) == 1, error
    assert_gone(before)


def test_a_two_node_ray_cluster_gives_the_serial_run(ray_folder, tmp_path):
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"no ray command beside {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ray_folder / "site"),
           "DEAP_LLMMERGE_TEST_SHARES": str(tmp_path / "cluster.shares"),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}  # the cluster's token, on every node
    port = 6390 + os.getpid() % 200
    head = subprocess.run([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=1",
                           "--include-dashboard=false", "--disable-usage-stats"],
                          env=env, capture_output=True, text=True)
    try:
        assert head.returncode == 0, head.stderr
        node = subprocess.run([str(ray_cli), "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                               "--disable-usage-stats"], env=env, capture_output=True, text=True)
        assert node.returncode == 0, node.stderr
        result = cli("run", ray_folder / "config.yaml", "--output", tmp_path / "cluster", "--backend", "ray",
                     "--workers", 2, "--address", f"127.0.0.1:{port}", env=env)
        assert result.returncode == 0, result.stderr
        assert recipe(tmp_path / "cluster")["halloffame"] == recipe(ray_folder / "serial")["halloffame"]
        assert len({pid for pid, _ in noted(tmp_path / "cluster.shares")}) == 2
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(tmp_path / "cluster", ignore_errors=True)


def test_address_without_ray_backend_is_refused_in_one_line(ray_folder, tmp_path):
    result = cli("run", ray_folder / "config.yaml", "--output", tmp_path / "x", "--address", "auto")
    assert result.returncode != 0 and "--backend ray" in result.stderr.strip().splitlines()[-1]


def test_an_address_where_no_ray_answers_is_one_line_at_once(ray_folder, tmp_path):
    started = time.time()
    result = cli("run", ray_folder / "config.yaml", "--output", tmp_path / "x", "--backend", "ray",
                 "--address", "127.0.0.1:1")
    assert result.returncode != 0 and time.time() - started < 60
    assert result.stderr.strip().splitlines()[-1:] == [result.stderr.strip()], result.stderr
    assert "no Ray cluster answers at 127.0.0.1:1" in result.stderr
