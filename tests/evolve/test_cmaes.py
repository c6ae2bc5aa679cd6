"""CMA-ES in the loop: within the gene bounds, reproducible, resumed exactly, the same under SCOOP."""

import json

import numpy as np
import pytest
from conftest import cli, tiny_benchmark, tiny_model, write_run_config
from helpers.logbooks import csv_rows, records

from deap_llmmerge import ConfigError, LLMMergeGA
from deap_llmmerge.genomes.methods import genome_bounds
from deap_llmmerge.run.checkpoint import ga_state, restore_ga


def _sources():
    return [tiny_model("llama", 1), tiny_model("llama", 2), tiny_model("llama", 3)]


def _cmaes(generations=4, **settings):
    settings = settings or {"genome": "methods", "method": "ties"}
    return LLMMergeGA(_sources(), tiny_benchmark(), population_size=6, max_generations=generations, seed=3,
                      algorithm="cmaes", cmaes={"sigma": 0.3}, **settings)


def _hall(ga):
    return [(list(ind), ind.fitness.values) for ind in ga.halloffame]


@pytest.mark.parametrize("settings", [{"genome": "methods", "method": "ties"}, {"genome": "blend"},
                                      {"genome": "methods", "method": "search"}])
def test_every_candidate_lies_within_the_gene_bounds_and_the_strategy_learns(settings):
    ga = _cmaes(**settings)
    ga.run()
    low, up = ga.cmaes.low, ga.cmaes.up
    genomes = list(ga.cached_map.genomes.values())
    assert len(genomes) > 3 * 6
    for genome in genomes:
        assert np.all(np.asarray(genome, float) >= low) and np.all(np.asarray(genome, float) <= up), genome
    if settings["genome"] == "methods" and settings["method"] == "ties":
        assert list(low) == genome_bounds(ga.evaluator.space)[0]
    sigmas = [record["sigma"] for record in ga.logbook[1:]]
    assert len(set(sigmas)) > 1 and all(record["penalty"] >= 0 for record in ga.logbook[1:])


def test_the_same_seed_gives_the_same_run_whatever_numpys_global_state():
    np.random.seed(1)
    first = _cmaes()
    first.run()
    np.random.seed(2)
    second = _cmaes()
    second.run()
    assert _hall(first) == _hall(second) and records(first.logbook) == records(second.logbook)


def test_a_resumed_run_ends_as_the_uninterrupted_one():
    whole = _cmaes(5)
    whole.run()
    part = _cmaes(2)
    part.run()
    resumed = _cmaes(5)
    restore_ga(resumed, json.loads(json.dumps(ga_state(part))))  # through JSON, as a checkpoint goes
    resumed.run()
    assert _hall(resumed) == _hall(whole) and records(resumed.logbook) == records(whole.logbook)


def test_the_first_generation_holds_every_pure_source_and_the_default_recipe():
    ga = _cmaes(0)
    ga.run()
    plans = {ga.evaluator.decode(ind) for ind in ga.population}
    pure = {ga.evaluator.decode(ga.toolbox.pure(source=k)) for k in range(3)}
    assert pure < plans and len(plans) == 4


@pytest.mark.parametrize(("settings", "message"), [
    ({"genome": "choice"}, "algorithm cmaes needs a genome of bounded floats"),
    ({"genome": "stack"}, "algorithm cmaes needs a genome of bounded floats"),
    ({"genome": "blend", "selection": "nsga2"}, "selection nsga2 does not apply to algorithm cmaes"),
])
def test_cmaes_where_it_cannot_work_is_one_clear_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        _cmaes(**settings)


def test_under_scoop_cmaes_finds_the_serial_run(tmp_path, saved_llamas):
    config = write_run_config(tmp_path, saved_llamas, genome="blend", algorithm="cmaes", cmaes={"sigma": 0.2},
                              ga={"population_size": 4, "max_generations": 3, "seed": 2})
    for name, workers in (("serial", []), ("scoop", ["--workers", 2])):
        assert cli("run", config, "--output", tmp_path / name, *workers).returncode == 0
    serial, scoop = (json.loads((tmp_path / name / "recipe.json").read_text()) for name in ("serial", "scoop"))
    assert serial["halloffame"] == scoop["halloffame"] and scoop["run"]["processes"] == 2
    assert csv_rows(tmp_path / "serial" / "logbook.csv") == csv_rows(tmp_path / "scoop" / "logbook.csv")
    assert "sigma" in (tmp_path / "serial" / "logbook.csv").read_text().splitlines()[0]
