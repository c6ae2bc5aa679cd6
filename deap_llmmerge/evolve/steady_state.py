"""The asynchronous steady-state loop (``ga.loop: steady_state``): no worker waits for a generation's last
candidate.

As soon as a worker is free it gets a new child, bred from the population as it is then: two parents by the
run's selection (tournament, or NSGA-II's crowded tournament), crossed and mutated by the toolbox, the first
child kept. A scored child enters at once: under tournament selection it replaces the population's worst
member when it is at least as good; under NSGA-II the population is the best ``population_size`` of
population + child by rank and crowding. A child whose merge the population holds already does not enter
(copies would crowd it out); one whose merge the cache holds is judged without a task.

A "generation" is ``population_size`` children entered: the logbook, the hall of fame's record, the callback
(checkpoint) and ``max_generations`` count in them, so the budget of evaluations is the generational loop's.
Children still being scored when a generation ends are written in the checkpoint and sent again on
``--resume``. Generation 0 is the initial population, scored one candidate per task as well.

Reproducible: a serial run (one task at a time, each entered before the next is bred) gives the same result
from a seed, interrupted and resumed or not. With several workers the order in which children finish
decides which parents the next ones have, so a distributed run depends on timing.
"""

from __future__ import annotations

import logging
import time

from deap import algorithms

from ..distributed.asynchronous import submitter_for
from ..scoring.evaluator import score_chunk

__all__ = ["SteadyState"]

log = logging.getLogger(__name__)


class SteadyState:
    """The loop's state between generations: the children in flight (``in_flight``: genomes, in the order
    they were sent). ``ga`` is the :class:`~.ga.LLMMergeGA` it runs."""

    def __init__(self, ga) -> None:
        self.ga = ga
        self.in_flight: list[list] = []  # genomes sent and not yet entered (kept by the checkpoint)
        self._submitter = None
        self._waiting: dict = {}  # merge key -> the individuals that wait for its fitness

    @property
    def submitter(self):
        if self._submitter is None:
            self._submitter = submitter_for(self.ga.cached_map.base_map)
        return self._submitter

    # -- children ---------------------------------------------------------------------------------------
    def _breed(self) -> list:
        ga = self.ga
        select = ga.toolbox.select_parents if ga.selection == "nsga2" else ga.toolbox.select
        parents = [ga.toolbox.clone(ind) for ind in select(ga.population, 2)]
        return algorithms.varAnd(parents, ga.toolbox, ga.crossover_rate, 1.0)[0]

    def _send(self, individual: list) -> object | None:
        """Send ``individual`` to be scored; return it at once when its fitness is known."""
        cached_map = self.ga.cached_map
        key, values = cached_map.known(individual)
        if values is not None:
            individual.fitness.values = values
            return individual
        self.in_flight.append(list(individual))
        if key in self._waiting:  # the same merge is on its way: it waits for that one
            self._waiting[key].append(individual)
            return None
        self._waiting[key] = [individual]
        self.submitter.submit(score_chunk, cached_map.task(key), key)
        return None

    def _finished(self) -> list:
        """The individuals whose tasks finished (at least one while any is in flight)."""
        cached_map, out = self.ga.cached_map, []
        for key, results in self.submitter.wait():
            values = cached_map.accept(key, self._waiting[key][0], results)
            self.fresh += 1
            for individual in self._waiting.pop(key):
                individual.fitness.values = values
                self.in_flight.remove(list(individual))
                out.append(individual)
        return out

    def _enter(self, child: list) -> None:
        ga = self.ga
        same = ga.cached_map.same
        key = same.key(child)
        if any(same.key(member) == key for member in ga.population):  # no second copy of a merge
            return
        if ga.selection == "nsga2":
            ga.population[:] = ga.toolbox.select(ga.population + [child], ga.population_size)
            return
        worst = min(range(len(ga.population)), key=lambda i: ga.population[i].fitness.wvalues)
        if child.fitness.wvalues >= ga.population[worst].fitness.wvalues:
            ga.population[worst] = child

    # -- the loop ---------------------------------------------------------------------------------------
    def first(self, population: list) -> tuple[int, list]:
        """Score the initial population (generation 0), one candidate per task."""
        return self._generation(list(population), breed=False)

    def step(self) -> tuple[int, list]:
        """One generation: ``population_size`` children entered; returns (new evaluations, children)."""
        return self._generation([], breed=True)

    def _generation(self, todo: list, breed: bool) -> tuple[int, list]:
        ga, cached_map = self.ga, self.ga.cached_map
        cached_map.last_failures, cached_map.last_share_seconds = [], []
        self.fresh, started = 0, time.perf_counter()
        queue = todo
        if self.in_flight and not self._waiting:  # after a resume: what was in flight is sent again first
            genomes, self.in_flight = self.in_flight, []
            queue = [self._individual(genome) for genome in genomes] + todo
        entered: list = []
        target, capacity = ga.population_size, self.submitter.capacity
        last = not breed or ga.generation + 1 >= ga.max_generations  # the last breeds no more than it needs
        while len(entered) < target:
            while len(self.in_flight) < capacity and len(entered) < target:
                if queue:
                    child = queue.pop(0)
                elif breed and not (last and len(entered) + len(self.in_flight) >= target):
                    child = self._breed()
                else:
                    break
                known = self._send(child)
                if known is not None:
                    self._take(known, breed, entered)
            if len(entered) >= target or not self.in_flight:
                break
            for child in self._finished():
                self._take(child, breed, entered)
        cached_map.note_utilisation(capacity, time.perf_counter() - started)
        ga.count_failures(self.fresh, ga.generation + 1 if breed else 0)
        return self.fresh, entered

    def _take(self, individual: list, breed: bool, entered: list) -> None:
        entered.append(individual)
        if breed:
            self._enter(individual)

    def _individual(self, genome: list) -> list:
        """An individual of ``genome`` without a fitness (no random number drawn)."""
        individual = self.ga.toolbox.pure(source=0)
        individual[:] = genome
        if individual.fitness.valid:
            del individual.fitness.values
        return individual
