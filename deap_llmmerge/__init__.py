"""deap-llmmerge: evolve merges of language models with DEAP.

Public API, top-down: the facade (:class:`LLMMergeGA`), the toolbox it wraps (:func:`make_toolbox`,
:func:`build_toolbox`), the settings groups a run config is made of (:class:`GASettings`,
:class:`EvolveSettings`, :class:`GenomeSettings`, :class:`ScoringSettings`), the data it scores on
(:class:`BenchmarkData`, :func:`load_benchmark`, :func:`build_benchmark`), the registries of genome families
and merge methods, where candidates are scored (:class:`PoolMap`, :class:`RayMap`, :func:`scoop_map`), and
the errors that name bad input.

The package is laid out by job, one folder each: ``evolve`` (the search), ``genomes``, ``scoring``,
``models`` (sources and the merge engine), ``methods`` (merge kernels), ``distributed`` (SCOOP, the
pool and Ray) and ``run`` (the command line and its files). A folder's modules import each other's modules
directly; from above them they import only ``errors``, ``devices`` and the package's ``__version__``, and
no module imports its own folder's ``__init__``.
"""

import sys

from .distributed import PoolMap, RayMap, scoop_map
from .distributed.heartbeats import patient_scoop_resend
from .errors import (
    BenchmarkDataError,
    ConfigError,
    EvaluationError,
    IncompatibleModelsError,
    InvalidGenomeError,
    LLMMergeError,
    SourceModelError,
)
from .evolve.ga import LLMMergeGA
from .evolve.settings import EvolveSettings, GASettings
from .evolve.toolbox import build_toolbox, individual_class, make_toolbox
from .genomes import GENOMES, GenomeFamily, GenomeSettings, GenomeSpace
from .methods import MERGE_METHODS, register_merge_method
from .models.compatibility import is_compatible
from .models.engine import MergeEngine
from .models.plans import MergePlan, PartMerge
from .models.recipes import merge_models
from .models.sources import SourcePool
from .scoring.benchmark_files import build_benchmark
from .scoring.benchmarks import BenchmarkData, load_benchmark
from .scoring.cached_map import CachedMap
from .scoring.evaluator import Evaluator
from .scoring.metrics import calculate_accuracy, calculate_loss
from .scoring.settings import ScoringSettings

__version__ = "0.2.0"

if "scoop" in sys.modules:  # under ``python -m scoop``, also for a script that maps with futures.map itself
    patient_scoop_resend()

__all__ = [
    "LLMMergeGA", "make_toolbox", "build_toolbox", "individual_class",
    "GASettings", "EvolveSettings", "GenomeSettings", "ScoringSettings",
    "BenchmarkData", "load_benchmark", "build_benchmark",
    "SourcePool", "is_compatible", "calculate_accuracy", "calculate_loss",
    "GENOMES", "GenomeFamily", "GenomeSpace", "MERGE_METHODS", "register_merge_method",
    "merge_models", "MergePlan", "PartMerge", "MergeEngine", "Evaluator", "CachedMap", "PoolMap", "RayMap", "scoop_map",
    "LLMMergeError", "ConfigError", "SourceModelError", "IncompatibleModelsError", "BenchmarkDataError",
    "InvalidGenomeError", "EvaluationError", "__version__",
]
