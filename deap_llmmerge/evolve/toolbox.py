"""The DEAP toolbox: individuals, population, evaluate, map, mate, mutate, select.

The toolbox is the product; :class:`~deap_llmmerge.ga.LLMMergeGA` is a convenience around it. Every
registered function is module-level and picklable, so the toolbox works with ``deap.algorithms``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from deap import base, creator, tools

from ..errors import ConfigError
from ..genomes import GenomeFamily, GenomeSpace, get_family
from ..genomes.methods import default_search_methods
from ..methods import check_method_options
from ..models.compatibility import CompatibilityCheck, is_compatible
from ..models.sources import SourcePool
from ..scoring.benchmarks import BenchmarkData
from ..scoring.cached_map import CachedMap
from ..scoring.evaluator import Evaluator
from ..scoring.metrics import KIND_METRIC_NAMES, Metric
from .objectives import SINGLE, Objective, parse_objectives
from .selection import selParetoTournament

__all__ = ["make_toolbox", "individual_class", "initPopulation", "as_benchmarks", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = (1.0, -1.0)
SELECTIONS = ("tournament", "nsga2")


def individual_class(weights: Sequence[float] = DEFAULT_WEIGHTS) -> type:
    """The ``deap.creator`` list class whose fitness has ``weights`` (created once per process)."""
    suffix = "_".join(f"{w:g}".replace("-", "m").replace(".", "p") for w in weights)
    fitness_name, individual_name = f"MergeFitness_{suffix}", f"MergeGenome_{suffix}"
    if not hasattr(creator, individual_name):
        creator.create(fitness_name, base.Fitness, weights=tuple(weights))
        creator.create(individual_name, list, fitness=getattr(creator, fitness_name))
    return getattr(creator, individual_name)


individual_class()  # the default classes exist on import, so pickled individuals load anywhere


def initPopulation(container: Callable, family: GenomeFamily, space: GenomeSpace, n: int) -> list:
    """``n`` individuals: every pure source first, then the family's seeds (a method's default recipe),
    as many as fit, then random genomes."""
    population = [family.pure(container, k, space) for k in range(space.n_sources)]
    population += family.seeds(container, space)
    population = population[:n]
    population += [family.init(container, space) for _ in range(n - len(population))]
    return population


def as_benchmarks(data: object) -> dict[str, BenchmarkData]:
    """One benchmark (BenchmarkData, a dict of tensors, an ``(input_ids, labels)`` tuple) or named ones."""
    if isinstance(data, Mapping) and data and "input_ids" not in data:
        if not all(isinstance(name, str) for name in data):
            raise ConfigError("named benchmarks need string names")
        return {name: BenchmarkData.coerce(value) for name, value in data.items()}
    return {SINGLE: BenchmarkData.coerce(data)}


def make_toolbox(
    sources: Sequence[object] | SourcePool,
    benchmark_data: object,
    genome: str = "choice",
    *,
    device: str = "cpu",
    batch_size: int = 32,
    objectives: Sequence[str] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    weights: Sequence[float] | None = None,
    compatible: CompatibilityCheck = is_compatible,
    base_model: object | None = None,
    method: str | None = None,
    search_methods: Sequence[str] | None = None,
    method_options: Mapping[str, Mapping[str, object]] | None = None,
    negative_weights: bool = False,
    genome_granularity: str = "layer",
    depth: tuple[int, int] | None = None,
    seed: int = 0,
    mutation_rate: float = 0.1,
    crossover_swap_rate: float = 0.5,
    tournament_size: int = 3,
    selection: str = "tournament",
    base_map: Callable = map,
    score_memory_mb: int | None = None,
    savings: bool = True,
    trust_remote_code: bool = False,
) -> base.Toolbox:
    """Build the toolbox for merging ``sources`` scored on ``benchmark_data`` (one benchmark, or a dict of
    named ones with ``objectives`` such as ``["qa.accuracy", "play.loss"]``).

    Registers ``individual``, ``pure`` (source k's genome), ``population`` (pure sources first),
    ``evaluate`` (an Evaluator), ``map`` (a CachedMap over ``base_map``), ``mate``, ``mutate`` (the
    family's, per-gene probability ``mutation_rate``) and ``select`` (tournament, or NSGA-II's survivor
    selection with ``selection="nsga2"``, whose parent selection is ``select_parents``).
    """
    family = get_family(genome)
    check_method_options(method_options or {})
    if selection not in SELECTIONS:
        raise ConfigError(f"unknown selection {selection!r}; known: {', '.join(SELECTIONS)}")
    pool = sources if isinstance(sources, SourcePool) else \
        SourcePool(sources, compatible, trust_remote_code=trust_remote_code, base=base_model)
    benchmarks = as_benchmarks(benchmark_data)
    for name, data in benchmarks.items():
        label = "benchmark" if name == SINGLE else f"benchmark {name!r}"
        data.check_against(pool.vocab_size, pool.max_positions, label)
    measured = {name: tuple(metrics) if metrics else KIND_METRIC_NAMES[data.kind] for name, data in benchmarks.items()}
    goals: tuple[Objective, ...] = parse_objectives(objectives, list(benchmarks), measured)
    fitness_weights = tuple(weights) if weights is not None else tuple(o.weight for o in goals)
    if len(fitness_weights) != len(goals):
        raise ConfigError(f"{len(goals)} objectives but {len(fitness_weights)} fitness weights")
    if method == "search" and not search_methods:
        search_methods = default_search_methods(pool.num_sources, pool.base_index)
    space = GenomeSpace(
        tuple(pool.part_names), pool.num_sources, pool.base_index, genome_granularity, method,
        tuple(search_methods or ()), negative_weights,
        tuple((name, tuple(sorted(values.items()))) for name, values in (method_options or {}).items()),
        seed, None if depth is None else tuple(depth),
    )
    family.check(space)
    container = individual_class(fitness_weights)
    evaluator = Evaluator(pool, benchmarks, family, space, goals, device, batch_size,
                          dict(metrics) if metrics else None, score_memory_mb, savings,
                          {name: dict(values) for name, values in (method_options or {}).items()})
    evaluator.weights = fitness_weights

    toolbox = base.Toolbox()
    toolbox.register("individual", family.init, container, space)
    toolbox.register("pure", family.pure, container, space=space)
    toolbox.register("population", initPopulation, container, family, space)
    toolbox.register("evaluate", evaluator)
    toolbox.register("map", CachedMap(evaluator, base_map))
    family.register_operators(toolbox, space, mutation_rate, crossover_swap_rate)
    if selection == "nsga2":
        toolbox.register("select", tools.selNSGA2)
        toolbox.register("select_parents", selParetoTournament)
    else:
        toolbox.register("select", tools.selTournament, tournsize=tournament_size)
    return toolbox
