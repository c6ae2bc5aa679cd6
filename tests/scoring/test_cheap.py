"""Anchors and racing: the estimates and bounds they rest on, against hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from deap_llmmerge.scoring.anchors import anchor_count, choose_anchors
from deap_llmmerge.scoring.cheap import Race, estimate, paired_optimistic
from deap_llmmerge.scoring.items import weighted_metrics


def test_anchors_of_a_synthetic_response_matrix_give_the_hand_computed_estimate():
    # 10 items in two kinds: items 0-5 every candidate gets right (score 2), items 6-9 none does (score -2);
    # item 4 and item 8 are the most typical of their kind (exactly at the centre)
    correct = np.array([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0]] * 3, dtype=float)
    score = np.array([[2.1, 1.9, 2.2, 1.8, 2.0, 2.0, -2.1, -1.9, -2.0, -2.0]] * 3)
    score[:, 5] = 2.0
    anchors, weights = choose_anchors(correct, score, 2, seed=0)
    assert len(anchors) == 2 and set(anchors[:1]) <= {4, 5} and set(anchors[1:]) <= {8, 9}
    assert weights.tolist() == [0.6, 0.4]
    # a new candidate right on the first anchor only: estimated accuracy 0.6 (by hand: 1 * 0.6 + 0 * 0.4)
    new = np.zeros(10)
    new[anchors[0]] = 1.0
    table = {"nll": torch.zeros(2, dtype=torch.float64), "tokens": torch.ones(2, dtype=torch.float64),
             "correct": torch.as_tensor(new[anchors])}
    assert weighted_metrics(table, "tensors", torch.as_tensor(weights * 10))["accuracy"] == pytest.approx(0.6)


@pytest.mark.parametrize(("setting", "items", "count"), [(50, 500, 50), (0.1, 500, 50), (0.1, 4, 1), (900, 500, 500)])
def test_anchor_counts_are_items_or_a_share(setting, items, count):
    assert anchor_count(setting, items) == count


def test_estimates_and_standard_errors_by_hand():
    table = {"correct": torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64),
             "nll": torch.tensor([2.0, 4.0, 2.0, 0.0], dtype=torch.float64),
             "tokens": torch.tensor([1.0, 2.0, 1.0, 0.0], dtype=torch.float64) + 1,
             "choice_nll": torch.tensor([0.5, 1.5, 0.5, 0.5], dtype=torch.float64)}
    ones = torch.ones(4, dtype=torch.float64)
    mean, error = estimate(table, "multiple_choice", "accuracy", ones)
    assert mean == 0.75 and error == pytest.approx(math.sqrt(3 * 0.25 ** 2 + 0.75 ** 2) / 4)
    loss, error = estimate(table, "tensors", "loss", ones)  # 8 nats over 8 tokens
    assert loss == 1.0 and error == pytest.approx(math.sqrt(0 + 1 + 0 + 1) / 8)


def test_a_race_stops_what_cannot_enter_the_elites_or_the_front():
    elites = Race("lexicographic", ((0.5, -2.0),))
    assert elites.stops((0.4, -1.0)) and not elites.stops((0.5, -1.0)) and not elites.stops((0.6, -9.0))
    front = Race("dominance", ((0.5, -2.0), (0.3, -1.0)))
    assert front.stops((0.4, -2.5)) and not front.stops((0.6, -3.0)) and not front.stops((0.3, -1.0))


def test_the_paired_bound_is_the_mean_item_difference_from_the_elite_moved_up_by_its_error():
    from deap_llmmerge.scoring.objectives import Objective, Term

    # the elite got items 0-3 right and 4-7 wrong; the candidate, scored on items 0, 2, 4, 6 of 8, got only
    # item 0 right: differences (0, -1, 0, 0), mean -0.25, deviations (0.25, -0.75, 0.25, 0.25)
    reference = {"qa": np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=float)}
    correct = {"qa": torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)}
    positions, weights = {"qa": np.array([0, 2, 4, 6])}, {"qa": torch.ones(4, dtype=torch.float64)}
    objective = Objective((Term("qa", "accuracy"),), "qa.accuracy")
    error = math.sqrt(3 * 0.25 ** 2 + 0.75 ** 2) / 4 * math.sqrt(1 - 0.5)
    bound = paired_optimistic(objective, 1.0, correct, positions, weights, {"qa": 0.5}, reference, 2.0)
    assert bound == pytest.approx(-0.25 + 2.0 * error)
    # a loss term has no per-item 0/1 to pair: no paired bound (the unpaired one applies)
    lossy = Objective((Term("qa", "loss"),), "qa.loss")
    assert paired_optimistic(lossy, -1.0, correct, positions, weights, {"qa": 0.5}, reference, 2.0) is None


def test_pairing_stops_a_candidate_whose_own_interval_still_overlaps_the_elite():
    """After 80 of 400 items the candidate has lost 8 items the elite got right and won none: its own
    interval (0.4 + 2.58 standard errors, 0.53) still reaches the elite's 0.5, but the paired difference
    (-0.1 + 2.58 * 0.03) is below 0."""
    from deap_llmmerge.scoring.cheap import race_stops
    from deap_llmmerge.scoring.objectives import Objective, Term

    n = 400
    elite = np.tile([1.0, 0.0], n // 2)
    candidate = elite.copy()
    candidate[np.arange(0, 80, 2)[:8]] = 0.0  # 8 of the first 80 items lost, none won
    positions = np.arange(80)
    tables = {"qa": {"correct": torch.as_tensor(candidate[:80])}}
    weights = {"qa": torch.ones(80, dtype=torch.float64)}
    objective = [Objective((Term("qa", "accuracy"),), "qa.accuracy")]
    threshold = ((float(elite.mean()),),)
    unpaired = Race("lexicographic", threshold, z=2.58)
    paired = Race("lexicographic", threshold, z=2.58, reference=(("qa", elite),))
    args = (objective, [1.0], tables, {"qa": "multiple_choice"}, {"qa": positions}, weights, {"qa": 0.2})
    assert not race_stops(unpaired, *args) and race_stops(paired, *args)


def test_calibration_recovers_a_linear_link_from_the_anchors_and_refuses_what_it_cannot_fit():
    from deap_llmmerge.scoring.anchors import calibrate, calibrated_accuracy

    rng = np.random.default_rng(0)
    correct = (rng.random((8, 40)) < np.linspace(0.3, 0.7, 8)[:, None]).astype(float)
    anchors, weights = np.array([0, 5, 9, 20]), np.array([0.25, 0.25, 0.25, 0.25])
    truth = correct.mean(axis=1)
    # graded scores whose anchor mean carries the whole-set accuracy: accuracy = 0.1 + 0.2 * acc + 0.5 * score
    anchor_accuracy = correct[:, anchors].mean(axis=1)
    score = np.zeros((8, 40))
    score[:, anchors] = ((truth - 0.1 - 0.2 * anchor_accuracy) / 0.5)[:, None]
    b0, b1, b2 = calibrate(correct, score, anchors, weights)
    assert (b0, b1, b2) == pytest.approx((0.1, 0.2, 0.5), abs=1e-9)
    assert calibrated_accuracy((b0, b1, b2), anchor_accuracy[3], score[3, 0]) == pytest.approx(truth[3])
    assert calibrated_accuracy((0.0, 0.0, 10.0), 0.5, 1.0) == 1.0  # clipped into [0, 1]
    assert calibrate(correct[:4], score[:4], anchors, weights) is None  # too few candidates to fit on
    unbounded = score.copy()
    unbounded[2, 7] = np.inf  # a margin beyond float16
    assert calibrate(correct, unbounded, anchors, weights) is None
