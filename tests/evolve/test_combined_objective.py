"""One objective from several benchmarks (``objectives: {mean: [...], weights: [...]}``): under tournament
selection and CMA-ES the first of several benchmarks no longer decides alone."""

import pytest
from conftest import imitation, tiny_model

from deap_llmmerge import ConfigError, LLMMergeGA
from deap_llmmerge.run.config import RunConfig
from deap_llmmerge.scoring.objectives import parse_objectives


def test_a_combined_objective_is_the_weighted_mean_of_its_metrics():
    (goal,) = parse_objectives({"mean": ["qa.accuracy", "play.accuracy"], "weights": [3, 1]}, ["qa", "play"])
    assert goal.label == "mean(3*qa.accuracy, 1*play.accuracy)" and goal.weight == 1.0
    assert goal.value({"qa": {"accuracy": 0.6}, "play": {"accuracy": 0.2}}) == pytest.approx(0.75 * 0.6 + 0.25 * 0.2)
    plain, mean = parse_objectives(["qa.loss", {"mean": ["qa.loss", "play.loss"]}], ["qa", "play"])
    assert mean.label == "mean(qa.loss, play.loss)" and mean.weight == -1.0
    assert mean.value({"qa": {"loss": 1.0}, "play": {"loss": 3.0}}) == pytest.approx(2.0)


@pytest.mark.parametrize(("spec", "message"), [
    ({"mean": ["qa.accuracy", "play.loss"]}, "qa.accuracy is maximised but play.loss is minimised"),
    ({"mean": ["qa.accuracy", "play.accuracy"], "weights": [1]}, "must be 2 positive numbers"),
    ({"mean": ["qa.accuracy", "play.accuracy"], "weights": [1, -1]}, "must be 2 positive numbers"),
    ({"mean": ["qa.accuracy", "chess.accuracy"]}, "no benchmark named 'chess'"),
    ({"mean": ["qa.accuracy", "qa.accuracy"]}, "names one metric twice"),
    ({"mean": []}, "expected {mean:"),
    ({"average": ["qa.accuracy"]}, "unknown key 'average'"),
])
def test_a_bad_combined_objective_is_one_line_naming_it(spec, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_objectives(spec, ["qa", "play"])
    assert "\n" not in str(caught.value)


def test_the_config_takes_a_combined_objective_alone_or_in_a_list():
    for objectives in ({"mean": ["qa.accuracy", "play.accuracy"], "weights": [2, 1]},
                       ["qa.loss", {"mean": ["qa.accuracy", "play.accuracy"]}]):
        config = RunConfig.model_validate({"models": ["a", "b"], "benchmark": {"qa": "qa.pt", "play": "play.pt"},
                                           "objectives": objectives})
        assert parse_objectives(config.objectives, ["qa", "play"])[-1].label.startswith("mean(")


@pytest.fixture(scope="module")
def two_skills():
    """Two sources, each right everywhere on its own benchmark."""
    sources = [tiny_model("llama", 1), tiny_model("llama", 2)]
    return sources, {"first": imitation(sources[0], 0), "second": imitation(sources[1], 1)}


def test_under_tournament_selection_the_weights_decide_not_the_first_benchmark(two_skills):
    sources, benchmarks = two_skills
    settings = dict(llms=sources, genome="choice", population_size=6, max_generations=2, seed=0)
    lexicographic = LLMMergeGA(**settings, benchmark_data=benchmarks, objectives=["first.accuracy", "second.accuracy"])
    assert lexicographic.run() == lexicographic.toolbox.pure(source=0)  # the first benchmark decides
    combined = LLMMergeGA(**settings, benchmark_data=benchmarks,
                          objectives={"mean": ["first.accuracy", "second.accuracy"], "weights": [1, 3]})
    best = combined.run()
    assert combined.objectives == ("mean(1*first.accuracy, 3*second.accuracy)",)
    model = combined.merge_layers(best)
    first, second = (combined.evaluate_accuracy(model, benchmarks[name]) for name in ("first", "second"))
    assert best.fitness.values[0] == pytest.approx(0.25 * first + 0.75 * second, abs=1e-6)
    assert combined.evaluate(model) == pytest.approx(best.fitness.values)
    assert best.fitness.values[0] >= 0.75  # at least pure source 1's value: the second benchmark weighs more
    assert second > combined.evaluate_accuracy(lexicographic.merge_layers(lexicographic.best), benchmarks["second"])


def test_cmaes_searches_a_combined_objective(two_skills):
    sources, benchmarks = two_skills
    ga = LLMMergeGA(llms=sources, genome="blend", algorithm="cmaes", population_size=4, max_generations=2, seed=0,
                    benchmark_data=benchmarks, objectives={"mean": ["first.loss", "second.loss"]})
    best = ga.run()
    model = ga.merge_layers(best)
    losses = [ga.evaluate_loss(model, benchmarks[name]) for name in ("first", "second")]
    assert best.fitness.values[0] == pytest.approx(sum(losses) / 2, rel=1e-5)


def test_keyword_objectives_keep_their_meaning_as_a_mapping(two_skills):
    with pytest.raises(ConfigError, match="a mean needs metrics of one direction"):
        LLMMergeGA(llms=two_skills[0], benchmark_data=two_skills[1],
                   objectives={"mean": ["first.accuracy", "second.loss"]})
