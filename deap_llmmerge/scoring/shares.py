"""Cutting a call's plans into shares of about equal cost, so that no worker waits long for the last one.

A plan's cost is counted in decoder layers: the layers it builds and runs after the prefix it shares with
the plan before it in its share (:func:`~.population.shared_layers`), plus :data:`FIXED_COST` for what
every candidate pays whatever it shares (the head, the metrics, the task's round trip). The first plan of a
share shares nothing. Every plan of a call is scored on the same items, so the items and tokens scale all
costs alike and drop out (racing, which stops candidates early, is the exception no estimate foresees).

Shares are contiguous runs of the plans in sort order, so neighbours keep their shared prefixes. For each
share count from one per worker (``min_shares``) to :data:`MAX_SHARES_PER_WORKER` per worker, the plans
are cut so that the dearest share is as cheap as it can be; the count kept is the one whose shares, handed
in order to the first free worker (as SCOOP's broker, a pool and Ray's scheduler do), finish first.

SCOOP needs more than one share per worker: its root keeps the last task it submits and runs it itself,
and given exactly one task per worker it ran both of two 1-second tasks in the root, one after the other
(2.0 s; three or four such tasks took 2.0 s on two workers), so a SCOOP map asks for two per worker.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from ..models.plans import MergePlan
from .population import shared_layers

__all__ = ["plan_costs", "balanced_shares", "makespan", "FIXED_COST", "MAX_SHARES_PER_WORKER"]

FIXED_COST = 1.0  # per candidate, in decoder layers: the head, the metrics, the round trip
MAX_SHARES_PER_WORKER = 4


def plan_costs(plans: Sequence[MergePlan]) -> tuple[list[float], list[float]]:
    """``(alone, after)``: each plan's cost as the first of a share, and after the plan before it."""
    alone = [FIXED_COST + plan.num_layers for plan in plans]
    after = [alone[0] if plans else 0.0] + [alone[i] - shared_layers(plans[i - 1], plans[i])
                                            for i in range(1, len(plans))]
    return alone, after


def _cut(alone: list[float], after: list[float], cap: float) -> list[int] | None:
    """The starts of the fewest contiguous shares whose costs stay within ``cap`` (greedy, which is optimal
    here: dropping a share's first plan never makes it dearer), or None when one plan alone exceeds it."""
    starts, cost = [0], alone[0]
    if cost > cap:
        return None
    for i in range(1, len(alone)):
        if cost + after[i] <= cap:
            cost += after[i]
            continue
        if alone[i] > cap:
            return None
        starts.append(i)
        cost = alone[i]
    return starts


def _share_costs(alone: list[float], after: list[float], starts: list[int]) -> list[float]:
    bounds = [*starts, len(alone)]
    return [alone[a] + sum(after[a + 1:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _cut_into(alone: list[float], after: list[float], shares: int) -> list[int]:
    """Starts of at most ``shares`` shares whose dearest is as cheap as it can be (bisection on the cap)."""
    low, high = max(alone), alone[0] + sum(after[1:])
    best = _cut(alone, after, high)
    for _ in range(40):
        if high - low < 1e-6:
            break
        middle = (low + high) / 2
        starts = _cut(alone, after, middle)
        if starts is not None and len(starts) <= shares:
            high, best = middle, starts
        else:
            low = middle
    return best


def _at_least(alone: list[float], after: list[float], starts: list[int], count: int) -> list[int]:
    """``starts`` with its dearest shares of two or more plans halved until there are ``count``."""
    starts = list(starts)
    while len(starts) < count:
        bounds = [*starts, len(alone)]
        costs = _share_costs(alone, after, starts)
        splittable = [i for i in range(len(starts)) if bounds[i + 1] - bounds[i] > 1]
        if not splittable:
            break
        i = max(splittable, key=costs.__getitem__)
        starts.insert(i + 1, (bounds[i] + bounds[i + 1] + 1) // 2)
    return starts


def makespan(costs: Sequence[float], workers: int) -> float:
    """When the last of ``costs`` finishes, each handed in order to the first free of ``workers``."""
    free = [0.0] * max(1, workers)
    for cost in costs:
        heapq.heapreplace(free, free[0] + cost)
    return max(free)


def balanced_shares(plans: Sequence[object], workers: int, key=lambda plan: plan,
                    min_shares: int | None = None) -> list[list]:
    """``plans`` (already in sort order) in contiguous shares for ``workers`` workers, at least
    ``min_shares`` of them (default: one per worker) where there are plans enough; ``key`` gives each one's
    :class:`~deap_llmmerge.models.plans.MergePlan`. One share for one worker."""
    plans = list(plans)
    if not plans:
        return []
    if workers <= 1:
        return [plans]
    alone, after = plan_costs([key(plan) for plan in plans])
    best_starts, best_time = None, float("inf")
    fewest = min(max(workers, min_shares or 0), len(plans))
    for count in range(fewest, max(fewest, min(len(plans), MAX_SHARES_PER_WORKER * workers)) + 1):
        starts = _cut_into(alone, after, count)
        if len(starts) < fewest:  # the cheapest cut into ``count`` may use fewer: split its dearest shares
            starts = _at_least(alone, after, starts, fewest)
        time = makespan(_share_costs(alone, after, starts), workers)
        if time < best_time - 1e-9:
            best_starts, best_time = starts, time
    bounds = [*best_starts, len(plans)]
    return [plans[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
