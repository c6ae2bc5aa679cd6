"""The generational loop: reproducible, never worse than a source, composable with plain DEAP."""

import pytest
from conftest import tiny_benchmark, tiny_model
from deap import algorithms, tools
from helpers.logbooks import records

from deap_llmmerge import ConfigError, LLMMergeGA, make_toolbox


def _sources():
    return [tiny_model("llama", 1), tiny_model("llama", 2), tiny_model("llama", 3)]


def _run(seed=0, **kwargs):
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=8, max_generations=4, seed=seed, **kwargs)
    return ga, ga.run()


def _hall(ga):
    return [(list(ind), ind.fitness.values) for ind in ga.halloffame]


def test_same_seed_same_hall_of_fame_and_logbook(family_case):
    first, _ = _run(seed=5, **family_case)
    second, _ = _run(seed=5, **family_case)
    assert _hall(first) == _hall(second)
    assert records(first.logbook) == records(second.logbook)
    assert records(first.logbook.chapters["loss"]) == records(second.logbook.chapters["loss"])


def test_other_seed_explores_differently():
    first, _ = _run(seed=5)
    other, _ = _run(seed=6)
    assert [list(i) for i in first.population] != [list(i) for i in other.population]


def test_best_is_never_worse_than_the_best_source(family_case):
    ga, best = _run(**family_case)
    sources = [ga.toolbox.evaluate(ga.toolbox.pure(source=k)) for k in range(3)]
    best_source = max(sources, key=lambda values: (values[0], -values[1]))
    assert (best.fitness.values[0], -best.fitness.values[1]) >= (best_source[0], -best_source[1])


def test_identical_genomes_are_scored_once():
    calls = []
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=10, max_generations=5, seed=0)

    def counting_map(func, tasks):
        tasks = list(tasks)
        calls.extend(plan for _, plans, _ in tasks for plan in plans)  # tasks carry decoded plans
        return map(func, tasks)

    ga.cached_map.base_map = counting_map
    ga.run()
    assert len(calls) == len(set(calls)) == ga.cached_map.evaluations
    assert sum(record["evals"] for record in ga.logbook) == len(calls)


def test_elites_survive_unchanged():
    ga, _ = _run(elitism_rate=0.25)
    assert ga.num_elites == 2
    best_so_far = [max(c["max"] for c in ga.logbook.chapters["accuracy"][: g + 1]) for g in range(len(ga.logbook))]
    assert [c["max"] for c in ga.logbook.chapters["accuracy"]] == best_so_far


def test_callback_sees_every_generation_and_patience_stops_early():
    seen = []
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=4, max_generations=50, seed=0, patience=2,
                    callback=lambda ga, generation: seen.append(generation))
    ga.run()
    assert seen == list(range(len(seen))) and len(seen) < 51
    assert ga.generation - ga.improved_at == 2


def test_logbook_has_per_objective_statistics():
    ga, _ = _run()
    assert [r["gen"] for r in ga.logbook] == [0, 1, 2, 3, 4]
    assert set(ga.logbook.chapters) == {"accuracy", "loss"}
    assert set(ga.logbook.chapters["loss"][0]) >= {"max", "mean", "min"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"population_size": 1}, "population_size: Input should be greater than or equal to 2, got 1"),
        ({"crossover_rate": 1.5}, "crossover_rate: Input should be less than or equal to 1, got 1.5"),
        ({"mutation_rate": -0.1}, "mutation_rate: Input should be greater than or equal to 0, got -0.1"),
        ({"elitism_rate": 2}, "elitism_rate: Input should be less than or equal to 1, got 2"),
        ({"device": "cuda:7"}, "device 'cuda:7' requested but"),
        ({"device": "tpu"}, "device 'tpu'"),
        ({"genome": "dare"}, "unknown genome family 'dare'"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LLMMergeGA(_sources(), tiny_benchmark(), **kwargs)


def test_custom_metrics_replace_accuracy_and_loss():
    def calculate_accuracy(logits, labels):
        return 7.0, 10

    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=4, max_generations=1,
                    calculate_accuracy=calculate_accuracy)
    best = ga.run()
    assert best.fitness.values[0] == pytest.approx(0.7)


def test_toolbox_composes_with_plain_eaSimple():
    toolbox = make_toolbox(_sources(), tiny_benchmark(), genome="choice")
    population = toolbox.population(n=6)
    hall = tools.HallOfFame(2)
    population, log = algorithms.eaSimple(population, toolbox, cxpb=0.8, mutpb=0.3, ngen=3, halloffame=hall,
                                          verbose=False)
    assert len(population) == 6 and len(hall) == 2 and all(ind.fitness.valid for ind in population)
    assert [record["gen"] for record in log] == [0, 1, 2, 3]


@pytest.mark.parametrize(("rate", "size", "elites"), [(0.1, 5, 1), (0.1, 15, 2), (0.1, 25, 3), (0.1, 45, 5),
                                                      (0.01, 8, 1), (0.0, 8, 0), (0.25, 8, 2), (1.0, 4, 4)])
def test_elites_round_half_up_and_at_least_one(rate, size, elites):
    from deap_llmmerge.evolve.ga import elite_count

    assert elite_count(rate, size) == elites


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_populations_best_never_gets_worse_with_elitism(family_case, seed):
    population_best = []
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=5, max_generations=5, elitism_rate=0.1,
                    mutation_rate=0.5, seed=seed, **family_case,
                    callback=lambda g, gen: population_best.append(max(i.fitness.wvalues for i in g.population)))
    ga.run()
    assert all(later >= earlier for earlier, later in zip(population_best, population_best[1:])), population_best


def test_no_new_evaluations_without_crossover_or_mutation(family_case):
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=10, max_generations=4, crossover_rate=0.0,
                    mutation_rate=0.0, seed=0, **family_case)
    ga.run()
    assert [record["evals"] for record in ga.logbook][1:] == [0, 0, 0, 0]


def test_the_hall_of_fame_holds_distinct_merges():
    ga = LLMMergeGA(_sources(), tiny_benchmark(), population_size=10, max_generations=4, crossover_rate=0.0,
                    mutation_rate=0.0, seed=0, genome="blend")
    ga.run()
    plans = [ga.evaluator.decode(ind) for ind in ga.halloffame]
    assert len(plans) == len(set(plans))
    # [0.2, 0.8] and [0.1, 0.4] are the same blend: one merge, scored once
    n = len(ga.pool.part_names)
    assert ga.cached_map.same([0.2, 0.8, 0.0] * n, [0.1, 0.4, 0.0] * n)
