"""A newcomer's first hour: README snippets run as written, the CLI and logs read well, plots are honest."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TESTS, cli, tiny_benchmark, tiny_model, write_run_config

from deap_llmmerge import __version__
from deap_llmmerge.run.report import source_weights

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
PREAMBLE = """
import sys
sys.path.insert(0, {tests!r})
import torch
from conftest import tiny_benchmark, tiny_model
model_a, model_b = tiny_model("llama", 1), tiny_model("llama", 2)
ids, labels = tiny_benchmark()["input_ids"], tiny_benchmark()["labels"]
"""


DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "configuration.md", ROOT / "experiments" / "README.md"]


def python_snippets() -> list[str]:
    """Every Python snippet of the README and the reference it links to."""
    pattern = re.compile(r"```python\n(.*?)```", flags=re.S)
    return [snippet for path in DOCUMENTS for snippet in pattern.findall(path.read_text())]


def test_the_readme_and_its_reference_have_python_snippets():
    assert len(re.findall(r"```python\n", DOCUMENTS[0].read_text())) >= 1 and len(python_snippets()) >= 3


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_of_the_readme_and_its_pages_resolves_to_a_file(document):
    for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", document.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (document.parent / target).exists(), f"{document.name}: {target}"


def test_the_readme_is_short_enough_to_read_in_five_minutes():
    assert len(DOCUMENTS[0].read_text().splitlines()) <= 250


@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_every_readme_snippet_runs_as_written(index, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(PREAMBLE.format(tests=str(TESTS)) + python_snippets()[index])
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "a snippet shows its result"


def test_a_pool_started_outside_the_main_guard_is_one_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(PREAMBLE.format(tests=str(TESTS)) + (
        "from deap_llmmerge import LLMMergeGA, PoolMap\n"
        "ga = LLMMergeGA([model_a, model_b], (ids, labels), population_size=4, max_generations=1, map=PoolMap(2))\n"
        "ga.run()\n"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 1
    assert "starts a process pool outside 'if __name__ == \"__main__\":'" in done.stderr
    assert done.stderr.count("Traceback") == 1  # the script's own, not one per spawned worker


def test_version_and_quiet_after_the_command():
    assert cli("--version").stdout.strip() == f"deap-llmmerge {__version__}"
    done = subprocess.run([sys.executable, "-m", "deap_llmmerge", "scoop-entry", "-q"], capture_output=True,
                          text=True, env=ENV)
    assert done.returncode == 0 and done.stdout.strip().endswith("scoop_entry.py")


def test_every_argument_has_help():
    from deap_llmmerge.run.cli import _parser

    def actions(parser):
        for action in parser._actions:
            if action.choices and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from actions(sub)
            elif action.dest not in ("help", "version"):
                yield action

    missing = [action.dest for action in actions(_parser()) if not action.help]
    assert missing == []


@pytest.fixture(scope="module")
def blend_run(tmp_path_factory, saved_llamas):
    folder = tmp_path_factory.mktemp("blend")
    config = write_run_config(folder, saved_llamas, genome="blend",
                              ga={"population_size": 6, "max_generations": 2, "seed": 0})
    assert cli("run", config, "--output", folder / "out").returncode == 0
    return folder


def test_the_source_plot_of_a_blend_shows_each_weight(blend_run):
    result = cli("report", blend_run / "out")
    assert result.returncode == 0, result.stderr
    data = json.loads((blend_run / "out" / "report" / "sources.json").read_text())
    recipe = json.loads((blend_run / "out" / "recipe.json").read_text())
    assert data["kind"] == "two" and len(data["rows"]) == len(recipe["halloffame"])
    first = recipe["halloffame"][0]["genome"]
    for j in range(len(data["parts"])):
        w0, w1 = first[2 * j], first[2 * j + 1]
        assert data["text"][0][j] == f"{w0 / (w0 + w1):.2f}\n{w1 / (w0 + w1):.2f}"
        assert data["cells"][0][j] == pytest.approx(w1 / (w0 + w1))


def test_the_source_plot_of_a_choice_run_is_categorical():
    plans = [{"embed": {"method": "take", "sources": [1], "source_part": "embed"},
              "layers.0": {"method": "take", "sources": [0], "source_part": "layers.0"}}]
    data = source_weights(plans, ["#1"], ["a", "b"])
    assert data["kind"] == "choice" and data["cells"] == [[1.0, 0.0]]


def test_report_draws_a_stopped_run_and_says_it_is_unfinished(blend_run):
    out = blend_run / "stopped"
    config = yaml.safe_load((blend_run / "config.yaml").read_text())
    config["ga"]["max_generations"] = 40
    config["benchmark"] = str(blend_run / "bench.pt")
    (blend_run / "long.yaml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "-q", "run", str(blend_run / "long.yaml"),
                                "--output", str(out)], env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (out / "checkpoint.json").exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = cli("report", out)
    assert result.returncode == 0, result.stderr
    assert (out / "report" / "objectives.png").exists() and (out / "report" / "sources.png").exists()


def test_a_scoop_run_streams_a_line_per_generation_and_leaves_no_log(blend_run):
    process = subprocess.Popen([sys.executable, "-m", "deap_llmmerge", "run", str(blend_run / "config.yaml"),
                                "--output", str(blend_run / "scoop"), "--workers", "2"], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, while_running, lines = [], 0, []
    for line in process.stderr:
        lines.append(line)
        if re.search(r"generation \d+/2: ", line):
            seen.append(line)
            while_running += process.poll() is None
    process.wait()
    assert process.returncode == 0
    assert len(seen) == 3 and while_running >= 2, seen
    assert "max/mean/min accuracy" in seen[0] and "best so far accuracy" in seen[0]
    assert "starting 2 SCOOP workers on this host" in lines[0]  # said in the first second, before SCOOP is up
    assert any("loading 2 source models" in line for line in lines[:3])
    assert not list(Path("/tmp").glob(f"deap-llmmerge-scoop-{process.pid}.log"))


def test_the_recipe_says_what_the_head_covers_with_tied_embeddings(tmp_path):
    for seed in (1, 2):
        tiny_model("qwen2", seed).save_pretrained(tmp_path / f"q{seed}")
    torch.save(tiny_benchmark(), tmp_path / "bench.pt")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"models": ["q1", "q2"], "benchmark": "bench.pt",
                                                     "ga": {"population_size": 2, "max_generations": 0}}))
    assert cli("run", tmp_path / "c.yaml", "--output", tmp_path / "out").returncode == 0
    plan = json.loads((tmp_path / "out" / "recipe.json").read_text())["plan"]
    assert "final norm only" in plan["head"]["note"] and "note" not in plan["embed"]


def test_the_final_line_is_rounded(blend_run):
    result = cli("run", blend_run / "config.yaml", "--output", blend_run / "again")
    assert re.match(r"best fitness: accuracy \d(\.\d{1,4})?, loss \d\.\d{1,3}(e-?\d+)?$", result.stdout.splitlines()[0])
