"""Several benchmarks, several objectives: NSGA-II fronts, export of their members, adaptive mutation."""

import json

import pytest
import torch
import yaml
from conftest import cli, imitation, tiny_benchmark, tiny_model
from safetensors.torch import load_file

from deap_llmmerge import BenchmarkData, ConfigError, LLMMergeGA
from deap_llmmerge.scoring.metrics import benchmark_metrics
from deap_llmmerge.scoring.objectives import parse_objectives


def test_objectives_default_to_accuracy_and_loss_of_every_benchmark():
    assert [o.label for o in parse_objectives(None, ["benchmark"])] == ["accuracy", "loss"]
    labels = [o.label for o in parse_objectives(None, ["qa", "play"])]
    assert labels == ["qa.accuracy", "qa.loss", "play.accuracy", "play.loss"]
    goals = parse_objectives(["qa.accuracy", "play.loss"], ["qa", "play"])
    assert [o.weight for o in goals] == [1.0, -1.0]


@pytest.mark.parametrize(("specs", "message"), [
    (["qa.acc"], "unknown metric 'acc'"),
    (["chess.loss"], "no benchmark named 'chess'"),
    (["loss"], "no benchmark named ''"),
    (["qa.loss", "qa.loss"], "name one objective twice"),
])
def test_bad_objectives_are_named(specs, message):
    with pytest.raises(ConfigError, match=message):
        parse_objectives(specs, ["qa", "play"])


@pytest.fixture(scope="module")
def front_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nsga2")
    teachers = [tiny_model("llama", 1), tiny_model("llama", 2)]
    for i, teacher in enumerate(teachers):
        teacher.save_pretrained(folder / f"m{i}")
        torch.save(imitation(teacher, seed=i), folder / f"b{i}.pt")
    config = {"models": ["m0", "m1"], "benchmark": {"one": "b0.pt", "two": {"path": "b1.pt"}},
              "objectives": ["one.loss", "two.loss"], "selection": "nsga2", "genome": "blend",
              "ga": {"population_size": 8, "max_generations": 4, "seed": 0}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("run", folder / "config.yaml", "--output", folder / "out")
    assert result.returncode == 0, result.stderr
    return folder


def test_a_two_objective_run_returns_a_front_of_non_dominated_members(front_run):
    recipe = json.loads((front_run / "out" / "recipe.json").read_text())
    front = recipe["front"]
    assert recipe["objectives"] == ["one.loss", "two.loss"] and len(front) >= 3
    points = [tuple(member["fitness"]) for member in front]
    for p in points:
        assert not any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in points), (p, points)
    header = (front_run / "out" / "logbook.csv").read_text().splitlines()[0]
    assert header.startswith("gen,evals,one.loss_max,one.loss_mean,one.loss_min,two.loss_max")


@pytest.mark.slow  # starts processes
def test_export_member_rebuilds_each_member_of_the_front(front_run):
    recipe = json.loads((front_run / "out" / "recipe.json").read_text())
    data = [BenchmarkData.coerce(torch.load(front_run / f"b{i}.pt")) for i in (0, 1)]
    from transformers import LlamaForCausalLM

    from deap_llmmerge.run.runner import export_recipe

    result = cli("export", front_run / "out", "--member", 0, "--output", front_run / "member0")  # as users do
    assert result.returncode == 0, result.stderr
    for k, member in enumerate(recipe["front"]):
        if k:
            export_recipe(front_run / "out", front_run / f"member{k}", member=k)
        model = LlamaForCausalLM.from_pretrained(front_run / f"member{k}").eval()
        losses = [benchmark_metrics(model, d, 32)["loss"] for d in data]
        assert losses == pytest.approx(member["fitness"], rel=1e-6)
    assert load_file(front_run / "member0" / "model.safetensors")
    refused = cli("export", front_run / "out", "--member", len(recipe["front"]), "--output", front_run / "nope")
    assert refused.returncode == 1 and f"the Pareto front has members 0..{len(recipe['front']) - 1}" in refused.stderr


def test_adaptive_mutation_raises_the_rate_while_the_population_is_uniform():
    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    ga = LLMMergeGA(sources, imitation(sources[0], 0), population_size=6, max_generations=5, crossover_rate=0.0,
                    mutation_rate=0.05, seed=0, adaptive_mutation={"threshold": 0.9, "factor": 4.0})
    ga.run()
    rates = [record["mutation_rate"] for record in ga.logbook]
    diversity = [record["diversity"] for record in ga.logbook]
    assert all((rate == 0.2) == (share < 0.9) for rate, share in zip(rates, diversity))
    assert 0.2 in rates


def _non_dominated(values: list[tuple[float, ...]]) -> set[tuple[float, ...]]:
    """The fitness tuples (all minimised) that no other tuple beats on every objective."""
    return {v for v in values if not any(w != v and all(a <= b for a, b in zip(w, v)) for w in values)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_front_is_the_non_dominated_set_of_every_candidate_scored_resumed_or_not(seed):
    from deap_llmmerge.run.checkpoint import ga_state, restore_ga

    models = [tiny_model("llama", s) for s in (1, 2, 3)]
    benchmarks = {f"b{i}": tiny_benchmark(seed=i) for i in range(4)}

    def make(generations):
        return LLMMergeGA(models, benchmarks, population_size=4, max_generations=generations, mutation_rate=0.3,
                          genome="blend", seed=seed, objectives=[f"b{i}.loss" for i in range(4)], selection="nsga2")

    whole = make(5)
    best = whole.run()
    scored = list(whole.cached_map.cache.values())
    front = [tuple(ind.fitness.values) for ind in whole.halloffame]
    assert set(front) == _non_dominated(scored) and len(front) == len(set(front))
    assert tuple(best.fitness.values) in set(front)

    first = make(2)
    first.run()
    resumed = make(5)
    restore_ga(resumed, ga_state(first))
    resumed.run()
    assert [list(ind) for ind in resumed.halloffame] == [list(ind) for ind in whole.halloffame]
