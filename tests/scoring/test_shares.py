"""Shares of about equal cost: contiguous, complete, and finishing sooner than shares of equal count."""

from __future__ import annotations

import pytest

from deap_llmmerge.models.parts import layer_part
from deap_llmmerge.models.plans import MergePlan, PartMerge
from deap_llmmerge.scoring.shares import FIXED_COST, balanced_shares, makespan, plan_costs


def plan(sources: list[int]) -> MergePlan:
    """A choice plan: layer i taken from source ``sources[i]``; embeddings and head from source 0."""
    take = lambda source, part: PartMerge("take", (source,), part)  # noqa: E731
    return MergePlan((("embed", take(0, "embed")), *((layer_part(i), take(s, layer_part(i)))
                                                      for i, s in enumerate(sources)), ("head", take(0, "head"))))


def count_shares(items: list, chunks: int) -> list[list]:
    """The old rule: ``chunks`` contiguous runs of near-equal length."""
    size, extra = divmod(len(items), chunks)
    out, start = [], 0
    for i in range(chunks):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


def cost(share: list[MergePlan]) -> float:
    alone, after = plan_costs(share)
    return alone[0] + sum(after[1:])


def test_a_plan_costs_the_layers_it_does_not_share_with_the_one_before():
    a, b, c = plan([0, 0, 0, 0]), plan([0, 0, 1, 1]), plan([1, 1, 1, 1])
    alone, after = plan_costs([a, b, c])
    assert alone == [4 + FIXED_COST] * 3
    assert after == [4 + FIXED_COST, 2 + FIXED_COST, 4 + FIXED_COST]


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
def test_shares_are_contiguous_complete_and_keep_order(workers):
    plans = sorted((plan([(i >> k) & 1 for k in range(6)]) for i in range(40)), key=MergePlan.sort_key)
    shares = balanced_shares(plans, workers)
    assert [p for share in shares for p in share] == plans and all(shares)
    assert len(shares) == 1 if workers == 1 else workers <= len(shares) <= 4 * workers


def test_cost_balanced_shares_finish_sooner_than_shares_of_equal_count():
    # Sixteen plans that differ only in their last four layers (cheap after their neighbour), then eight
    # that share nothing (each costs 13): shares of equal count leave one worker with most of the work.
    cheap = [plan([0] * 8 + [(i >> k) & 1 for k in range(4)]) for i in range(16)]
    dear = [plan([1 + i] + [0] * 11) for i in range(8)]
    plans = sorted(cheap + dear, key=MergePlan.sort_key)
    even = makespan([cost(share) for share in count_shares(plans, 4)], 2)
    balanced = makespan([cost(share) for share in balanced_shares(plans, 2)], 2)
    assert balanced < 0.85 * even
    total = cost(plans)
    assert balanced <= 0.6 * total  # within 20% of a perfect split of the chained work


def test_a_scoop_map_gets_at_least_two_shares_per_worker_when_there_are_plans_enough():
    plans = sorted((plan([0] * 10 + [(i >> k) & 1 for k in range(2)]) for i in range(4)), key=MergePlan.sort_key)
    assert len(balanced_shares(plans, 2)) == 2  # near-identical plans: one share each finishes first
    shares = balanced_shares(plans, 2, min_shares=4)
    assert len(shares) == 4 and [p for share in shares for p in share] == plans
    assert len(balanced_shares(plans[:3], 2, min_shares=4)) == 3
