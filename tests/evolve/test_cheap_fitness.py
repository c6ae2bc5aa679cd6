"""Cheap fitness in the loop: anchors after generation 0, racing that never lets a stopped candidate into the
hall of fame, exact figures at the end, and an exact resume."""

import json

import pytest
from conftest import tiny_benchmark, tiny_model
from helpers.logbooks import records

from deap_llmmerge import LLMMergeGA
from deap_llmmerge.run.checkpoint import ga_state, restore_ga

SOURCES = [tiny_model("llama", 1), tiny_model("llama", 2), tiny_model("llama", 3)]


def imitation(teacher, n=48, length=10):
    """Random sequences labeled with ``teacher``'s greedy predictions: merges far from it score far worse."""
    import torch

    ids = tiny_benchmark(n=n, length=length, seed=4)["input_ids"]
    with torch.no_grad():
        predicted = teacher(input_ids=ids).logits.argmax(-1)
    labels = torch.full_like(ids, -100)
    labels[:, 1:] = predicted[:, :-1]
    return {"input_ids": ids, "labels": labels}


DATA = imitation(SOURCES[0])


def _ga(generations=4, selection="tournament", callback=None, **fitness):
    return LLMMergeGA(SOURCES, DATA, population_size=8, max_generations=generations, genome="blend", seed=1,
                      selection=selection, objectives=["loss", "accuracy"], fitness=fitness, mutation_rate=0.3,
                      callback=callback)


def test_anchors_score_later_generations_on_a_few_items_and_the_hall_of_fame_exactly():
    ga = _ga(anchors=0.25)
    ga.run()
    anchors, weights = ga.evaluator.anchors["benchmark"]
    assert len(anchors) == 12 and weights.sum() == pytest.approx(48)
    scorings = [record["item_scorings"] for record in ga.logbook]
    assert scorings[0] == 8 * 48 and all(s < 8 * 48 for s in scorings[1:])
    for member in ga.halloffame:  # exact: the whole benchmark's figures
        key = ga.cached_map.same.key(member)
        assert key not in ga.cached_map.estimated
        assert member.fitness.values == pytest.approx(ga.evaluate(ga.merge_layers(member)))


@pytest.mark.parametrize("selection", ["tournament", "nsga2"])
def test_racing_stops_candidates_and_none_of_them_enters_the_hall_of_fame(selection):
    ga = _ga(6, selection, racing=True)
    ga.run()
    stopped = ga.cached_map.stopped
    assert stopped, "racing stopped nothing"
    assert not {ga.cached_map.same.key(member) for member in ga.halloffame} & stopped
    assert sum(record["item_scorings"] for record in ga.logbook) < ga.cached_map.evaluations * 48


def test_a_resumed_cheap_run_ends_as_the_uninterrupted_one():
    saved = {}

    def checkpoint(ga, generation):  # what the run writes after each generation
        saved[generation] = json.dumps(ga_state(ga))

    whole = _ga(5, callback=checkpoint, anchors=12, racing=True)
    whole.run()
    resumed = _ga(5, anchors=12, racing=True)
    restore_ga(resumed, json.loads(saved[2]))
    resumed.run()
    assert [(list(m), m.fitness.values) for m in resumed.halloffame] == \
        [(list(m), m.fitness.values) for m in whole.halloffame]
    assert records(resumed.logbook) == records(whole.logbook)


def test_tournament_racing_pairs_each_candidate_with_the_elite_it_must_beat():
    """With accuracy first, the race carries the elite's per-item results (the paired rule); stopped candidates
    still never enter the hall of fame."""
    import numpy as np

    ga = LLMMergeGA(SOURCES, DATA, population_size=8, max_generations=4, genome="blend", seed=1,
                    objectives=["accuracy"], fitness={"racing": True}, mutation_rate=0.3)
    races = []
    choose = ga.cheap.fidelity

    def recording(loop):
        fidelity = choose(loop)
        races.append(fidelity.race)
        return fidelity

    ga.cheap.fidelity = recording
    ga.run()
    raced = [race for race in races if race is not None]
    assert raced and all(race.reference is not None for race in raced)
    name, reference = raced[-1].reference[0]
    assert name == "benchmark" and len(reference) == 48 and set(np.unique(reference)) <= {0.0, 1.0}
    assert ga.cached_map.stopped
    assert not {ga.cached_map.same.key(member) for member in ga.halloffame} & ga.cached_map.stopped


def test_a_calibrated_benchmark_estimates_accuracy_from_its_coefficients_and_exact_scores_ignore_them():
    import numpy as np

    from deap_llmmerge.scoring.cheap import Fidelity

    ga = LLMMergeGA(SOURCES, DATA, population_size=4, max_generations=0, genome="blend", seed=1,
                    objectives=["accuracy"])
    evaluator = ga.evaluator
    plan = evaluator.decode(ga.toolbox.pure(source=1))
    exact = evaluator.score_plans([plan])[0][0][0]
    evaluator.anchors = {"benchmark": (np.arange(0, 48, 4), np.full(12, 4.0))}
    plain = evaluator.score_plans([plan], Fidelity(exact=False))[0]
    evaluator.calibration = {"benchmark": (0.25, 0.0, 0.0)}  # whatever the anchors say: 0.25
    calibrated = evaluator.score_plans([plan], Fidelity(exact=False))[0]
    assert plain[3] == calibrated[3] == "estimate" and calibrated[0] == (0.25,) and plain[0] != (0.25,)
    assert evaluator.score_plans([plan])[0][0][0] == exact  # every item scored: no estimate, no calibration
