"""The DEAP toolbox: individuals, population, evaluate, map, mate, mutate, select.

The toolbox is the product; :class:`~deap_llmmerge.evolve.ga.LLMMergeGA` is a convenience around it. Every
registered function is module-level and picklable, so the toolbox works with ``deap.algorithms``.
:func:`build_toolbox` takes the settings groups a config holds; :func:`make_toolbox` is the keyword form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from deap import base, creator, tools

from ..errors import ConfigError, settings_from
from ..genomes import GenomeFamily, GenomeSettings, GenomeSpace, get_family
from ..models.compatibility import CompatibilityCheck, is_compatible
from ..models.sources import SourcePool
from ..scoring.benchmarks import BenchmarkData
from ..scoring.cached_map import CachedMap
from ..scoring.evaluator import Evaluator
from ..scoring.metrics import KIND_METRIC_NAMES, Metric
from ..scoring.objectives import SINGLE, Objective, parse_objectives
from ..scoring.settings import ScoringSettings, objectives_setting
from .selection import selParetoTournament
from .settings import EvolveSettings

__all__ = ["build_toolbox", "make_toolbox", "individual_class", "initPopulation", "as_benchmarks",
           "DEFAULT_WEIGHTS"]

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


def build_toolbox(
    pool: SourcePool,
    benchmarks: dict[str, BenchmarkData],
    evolve: EvolveSettings,
    genome: GenomeSettings,
    scoring: ScoringSettings,
    *,
    base_map: Callable = map,
    metrics: Mapping[str, Metric] | None = None,
    weights: Sequence[float] | None = None,
    savings: bool = True,
    crossover_swap_rate: float = 0.5,
) -> base.Toolbox:
    """Build the toolbox for merging the sources of ``pool`` scored on named ``benchmarks``.

    Registers ``individual``, ``pure`` (source k's genome), ``population`` (pure sources first),
    ``evaluate`` (an Evaluator), ``map`` (a CachedMap over ``base_map``), ``mate``, ``mutate`` (the
    family's, per-gene probability ``evolve.ga.mutation_rate``) and ``select`` (tournament, or NSGA-II's
    survivor selection, whose parent selection is ``select_parents``). ``metrics`` replaces the kind's
    accuracy and loss with ``fn(logits, labels) -> (total, count)`` callables.
    """
    family = get_family(genome.genome)
    for name, data in benchmarks.items():
        data.check_against(pool.vocab_size, pool.max_positions, "benchmark" if name == SINGLE else
                           f"benchmark {name!r}")
    measured = {name: tuple(metrics) if metrics else KIND_METRIC_NAMES[data.kind] for name, data in benchmarks.items()}
    goals: tuple[Objective, ...] = parse_objectives(scoring.objectives, list(benchmarks), measured)
    fitness_weights = tuple(weights) if weights is not None else tuple(o.weight for o in goals)
    if len(fitness_weights) != len(goals):
        raise ConfigError(f"{len(goals)} objectives but {len(fitness_weights)} fitness weights")
    space = genome.space(pool, evolve.ga.seed or 0)
    family.check(space)
    container = individual_class(fitness_weights)
    evaluator = Evaluator(pool, benchmarks, family, space, goals, scoring, dict(metrics) if metrics else None,
                          savings)
    evaluator.weights = fitness_weights

    toolbox = base.Toolbox()
    toolbox.register("individual", family.init, container, space)
    toolbox.register("pure", family.pure, container, space=space)
    toolbox.register("population", initPopulation, container, family, space)
    toolbox.register("evaluate", evaluator)
    toolbox.register("map", CachedMap(evaluator, base_map))
    family.register_operators(toolbox, space, evolve.ga.mutation_rate, crossover_swap_rate)
    if evolve.selection == "nsga2":
        toolbox.register("select", tools.selNSGA2)
        toolbox.register("select_parents", selParetoTournament)
    else:
        toolbox.register("select", tools.selTournament, tournsize=evolve.ga.tournament_size)
    return toolbox


def make_toolbox(
    sources: Sequence[object] | SourcePool,
    benchmark_data: object,
    genome: str = "choice",
    *,
    device: str = "cpu",
    batch_size: int = 32,
    objectives: Sequence[str | Mapping] | Mapping | None = None,
    score_memory_mb: int | None = None,
    selection: str = "tournament",
    seed: int = 0,
    mutation_rate: float = 0.1,
    tournament_size: int = 3,
    base_model: object | None = None,
    compatible: CompatibilityCheck = is_compatible,
    trust_remote_code: bool = False,
    **settings: object,
) -> base.Toolbox:
    """:func:`build_toolbox` from keywords: ``sources`` (models, paths, or a SourcePool) merged by the genome
    family ``genome`` with its settings (``method``, ``genome_granularity``, ``depth``, ...: see
    :class:`~deap_llmmerge.genomes.GenomeSettings`), scored on ``benchmark_data`` (one benchmark, or a dict of
    named ones with ``objectives`` such as ``["qa.accuracy", "play.loss"]``). ``base_map``, ``metrics``,
    ``weights``, ``savings`` and ``crossover_swap_rate`` go to :func:`build_toolbox`. Settings are checked
    before any model is loaded."""
    options = {key: settings.pop(key) for key in _TOOLBOX_OPTIONS if key in settings}
    evolve = settings_from(EvolveSettings, selection=selection, ga={"seed": seed, "mutation_rate": mutation_rate,
                                                                    "tournament_size": tournament_size})
    genomes = settings_from(GenomeSettings, genome=genome, **settings)
    scoring = settings_from(ScoringSettings, objectives=objectives_setting(objectives),
                            device=device, batch_size=batch_size, score_memory_mb=score_memory_mb)
    pool = sources if isinstance(sources, SourcePool) else \
        SourcePool(sources, compatible, trust_remote_code=trust_remote_code, base=base_model)
    return build_toolbox(pool, as_benchmarks(benchmark_data), evolve, genomes, scoring, **options)


_TOOLBOX_OPTIONS = ("base_map", "metrics", "weights", "savings", "crossover_swap_rate")
