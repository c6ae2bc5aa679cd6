"""The DEAP toolbox: individuals, population, evaluate, map, mate, mutate, select.

The toolbox is the product; :class:`~deap_llmmerge.ga.LLMMergeGA` is a convenience around it. Every
registered function is module-level and picklable, so the toolbox works with ``deap.algorithms``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deap import base, creator, tools

from .data import BenchmarkData
from .errors import ConfigError
from .evaluation import CachedMap, Evaluator
from .genomes import GenomeFamily, cxUniformParts, get_family
from .metrics import Metric, calculate_accuracy, calculate_loss
from .sources import CompatibilityCheck, SourcePool, is_compatible

__all__ = ["make_toolbox", "individual_class", "initPopulation", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = (1.0, -1.0)


def individual_class(weights: Sequence[float] = DEFAULT_WEIGHTS) -> type:
    """The ``deap.creator`` list class whose fitness has ``weights`` (created once per process)."""
    suffix = "_".join(f"{w:g}".replace("-", "m").replace(".", "p") for w in weights)
    fitness_name, individual_name = f"MergeFitness_{suffix}", f"MergeGenome_{suffix}"
    if not hasattr(creator, individual_name):
        creator.create(fitness_name, base.Fitness, weights=tuple(weights))
        creator.create(individual_name, list, fitness=getattr(creator, fitness_name))
    return getattr(creator, individual_name)


individual_class()  # the default classes exist on import, so pickled individuals load anywhere


def initPopulation(container: Callable, family: GenomeFamily, n: int, n_parts: int, n_sources: int) -> list:
    """``n`` individuals: first every pure source (as many as fit), then random genomes."""
    population = [family.pure(container, k, n_parts, n_sources) for k in range(min(n, n_sources))]
    population += [family.init(container, n_parts, n_sources) for _ in range(n - len(population))]
    return population


def make_toolbox(
    sources: Sequence[object] | SourcePool,
    benchmark_data: object,
    genome: str = "choice",
    *,
    device: str = "cpu",
    batch_size: int = 32,
    metrics: Sequence[Metric] = (calculate_accuracy, calculate_loss),
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    compatible: CompatibilityCheck = is_compatible,
    mutation_rate: float = 0.1,
    crossover_swap_rate: float = 0.5,
    tournament_size: int = 3,
    base_map: Callable = map,
) -> base.Toolbox:
    """Build the toolbox for merging ``sources`` scored on ``benchmark_data``.

    Registers ``individual``, ``population`` (pure sources first), ``evaluate`` (an Evaluator),
    ``map`` (a CachedMap over ``base_map``), ``mate`` (uniform crossover of whole parts), ``mutate``
    (the family's per-gene mutation with probability ``mutation_rate``) and ``select`` (tournament).
    """
    if len(metrics) != len(weights):
        raise ConfigError(f"{len(metrics)} metrics but {len(weights)} fitness weights")
    family = get_family(genome)
    pool = sources if isinstance(sources, SourcePool) else SourcePool(sources, compatible)
    data = BenchmarkData.coerce(benchmark_data)
    n_parts, n_sources = len(pool.part_names), pool.num_sources
    container = individual_class(weights)

    toolbox = base.Toolbox()
    toolbox.register("individual", family.init, container, n_parts, n_sources)
    toolbox.register("pure", family.pure, container, n_parts=n_parts, n_sources=n_sources)
    toolbox.register("population", initPopulation, container, family, n_parts=n_parts, n_sources=n_sources)
    evaluator = Evaluator(pool, data, family, metrics, weights, device, batch_size)
    toolbox.register("evaluate", evaluator)
    toolbox.register("map", CachedMap(evaluator, base_map))
    toolbox.register("mate", cxUniformParts, indpb=crossover_swap_rate,
                     genes_per_part=family.genes_per_part(n_sources))
    toolbox.register("mutate", family.mutate, n_sources=n_sources, indpb=mutation_rate)
    toolbox.register("select", tools.selTournament, tournsize=tournament_size)
    return toolbox


