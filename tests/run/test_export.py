"""``export`` as a user reaches for it: any hall-of-fame or front member by the number the report shows,
the member's fitness printed, sources that moved found with ``--models-from``; and the messages of a first
hour (another architecture, a folder that is not empty)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import cli, tiny_benchmark, tiny_model, write_run_config
from safetensors.torch import load_file

from deap_llmmerge import IncompatibleModelsError
from deap_llmmerge.models.sources import SourcePool


@pytest.fixture(scope="module")
def tournament_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    for seed in (1, 2):
        tiny_model("llama", seed).save_pretrained(folder / "models" / f"llama-{seed}")
    config = write_run_config(folder, [folder / "models" / f"llama-{s}" for s in (1, 2)], genome="blend",
                              ga={"population_size": 6, "max_generations": 2, "halloffame_size": 3})
    result = cli("run", config, "--output", folder / "out")
    assert result.returncode == 0, result.stderr
    return folder


def test_a_tournament_runs_hall_of_fame_members_export_with_their_fitness(tournament_run):
    recipe = json.loads((tournament_run / "out" / "recipe.json").read_text())
    assert len(recipe["halloffame"]) == 3
    done = cli("export", tournament_run / "out", "--member", 2, "--output", tournament_run / "member2")
    assert done.returncode == 0, done.stderr
    fitness = dict(zip(recipe["objectives"], recipe["halloffame"][2]["fitness"]))
    assert done.stdout.splitlines()[0] == "member 2: fitness " + ", ".join(
        f"{name} {value:.4g}" for name, value in fitness.items())
    best = cli("export", tournament_run / "out", "--member", 0, "--output", tournament_run / "member0")
    tensors = [load_file(tournament_run / name / "model.safetensors") for name in ("member0", "member2")]
    saved = load_file(tournament_run / "out" / "best" / "model.safetensors")
    assert best.returncode == 0 and all(torch.equal(saved[k], tensors[0][k]) for k in saved)  # member 0 is best
    assert any(not torch.equal(tensors[0][k], tensors[1][k]) for k in saved)
    wrong = cli("export", tournament_run / "out", "--member", 3, "--output", tournament_run / "member3")
    assert wrong.returncode != 0 and "--member 3: the hall of fame has members 0..2" in wrong.stderr


def test_sources_that_moved_are_found_with_models_from(tournament_run):
    moved = tournament_run / "elsewhere"
    shutil.copytree(tournament_run / "models", moved)
    recipe = json.loads((tournament_run / "out" / "recipe.json").read_text())
    original = tournament_run / "models"
    original.rename(tournament_run / "gone")
    try:
        lost = cli("export", tournament_run / "out", "--output", tournament_run / "lost")
        assert lost.returncode != 0 and "give --models-from DIR" in lost.stderr
        assert len(lost.stderr.strip().splitlines()) == 1
        found = cli("export", tournament_run / "out", "--models-from", moved, "--output", tournament_run / "found")
        assert found.returncode == 0, found.stderr
        assert found.stdout.startswith("the best: fitness ")
        assert str(recipe["sources"][0]["path"]).endswith("llama-1")
    finally:
        (tournament_run / "gone").rename(original)


def test_the_report_numbers_members_as_export_does_and_draws_every_pair_of_objectives(tmp_path, saved_llamas):
    pytest.importorskip("matplotlib")
    config = write_run_config(tmp_path, saved_llamas, genome="blend", selection="nsga2",
                              benchmark={"one": "bench.pt", "two": "bench.pt"},
                              objectives=["one.loss", "one.accuracy", "two.loss"],
                              ga={"population_size": 4, "max_generations": 1})
    assert cli("run", config, "--output", tmp_path / "out").returncode == 0
    done = cli("report", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report" / "pareto.png").stat().st_size > 0
    members = json.loads((tmp_path / "out" / "report" / "sources.json").read_text())
    assert any(label.startswith("member 0") for label in json.dumps(members).split('"'))


def test_a_source_of_another_architecture_says_which_with_its_path(tmp_path):
    tiny_model("llama", 1).save_pretrained(tmp_path / "a")
    tiny_model("gpt2", 1).save_pretrained(tmp_path / "b")
    with pytest.raises(IncompatibleModelsError, match=rf"source 1 \(b\) at {tmp_path / 'b'} is a gpt2 model, "
                                                      rf"source 0 \(a\) at {tmp_path / 'a'} a llama \(gpt2 vs llama\)"):
        SourcePool([tmp_path / "a", tmp_path / "b"])


def test_a_folder_that_is_not_empty_is_refused_with_the_advice_that_fits(tournament_run, tmp_path):
    config = tournament_run / "config.yaml"
    finished = cli("run", config, "--output", tournament_run / "out")
    assert "it holds a finished run: choose another --output" in finished.stderr
    assert "--resume" not in finished.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's own")
    other = cli("run", config, "--output", tmp_path / "mine")
    assert "choose another --output, or --force" in other.stderr and "--resume" not in other.stderr


def test_the_progress_bar_moves_per_candidate_and_shows_when_asked_for(tmp_path, saved_llamas, monkeypatch):
    from deap_llmmerge import LLMMergeGA
    from deap_llmmerge.scoring import cached_map

    moves = []

    class Bar:
        def __init__(self, total, **options):
            moves.append(("total", total, options["disable"]))

        def update(self, n):
            moves.append(n)

        def close(self):
            pass

    monkeypatch.setattr(cached_map, "tqdm", Bar)
    ga = LLMMergeGA(saved_llamas, tiny_benchmark(), population_size=6, max_generations=0, genome="blend")
    ga.cached_map.progress = "always"
    ga.run()
    assert moves[0] == ("total", 6, False) and moves[1:] == [1] * 6  # serial: one step per candidate
    config = write_run_config(tmp_path, saved_llamas, genome="blend", ga={"population_size": 4, "max_generations": 1})
    shown = cli("run", config, "--output", tmp_path / "out", env={"DEAP_LLMMERGE_PROGRESS": "1"})
    assert shown.returncode == 0 and "scoring:" not in shown.stderr  # --quiet (the tests' cli) draws no bar
    loud = subprocess.run([sys.executable, "-m", "deap_llmmerge", "run", str(config), "--output", str(tmp_path / "b")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                "DEAP_LLMMERGE_PROGRESS": "1"})
    assert loud.returncode == 0 and "scoring:" in loud.stderr
    assert re.search(r"\d+/4 \[[\d:]+<[\d:?]+, +[\d.?]+(candidate/s|s/candidate)", loud.stderr)  # count, ETA, rate
