"""Parent selection for NSGA-II runs (survivors are chosen by ``deap.tools.selNSGA2``)."""

from __future__ import annotations

import random

from deap import tools

__all__ = ["selParetoTournament"]


def selParetoTournament(individuals: list, k: int) -> list:
    """``k`` binary tournaments (``random.sample`` of two each): the lower non-domination rank wins, then the
    larger crowding distance, then the first drawn. Works for any population size, unlike
    ``selTournamentDCD``. Returns references, as DEAP's selections do."""
    fronts = tools.sortNondominated(individuals, len(individuals))
    rank, crowding = {}, {}
    for level, front in enumerate(fronts):
        tools.emo.assignCrowdingDist(front)
        for ind in front:
            rank[id(ind)] = level
            crowding[id(ind)] = ind.fitness.crowding_dist
    chosen = []
    for _ in range(k):
        a, b = random.sample(individuals, 2) if len(individuals) > 1 else (individuals[0], individuals[0])
        better = (rank[id(a)], -crowding[id(a)]) <= (rank[id(b)], -crowding[id(b)])
        chosen.append(a if better else b)
    return chosen
