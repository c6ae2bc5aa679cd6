"""deap-llmmerge: evolve merges of language models with DEAP.

Public API, top-down: the facade (:class:`LLMMergeGA`), the toolbox it wraps (:func:`make_toolbox`),
the data it scores on (:class:`BenchmarkData`), the genome families and merge methods (registries),
and the errors that name bad input.
"""

from .data import BenchmarkData, load_benchmark
from .errors import (
    BenchmarkDataError,
    ConfigError,
    EvaluationError,
    IncompatibleModelsError,
    InvalidGenomeError,
    LLMMergeError,
    SourceModelError,
)
from .evaluation import CachedMap, Evaluator
from .ga import LLMMergeGA
from .genomes import GENOMES, GenomeFamily
from .merge import MERGE_METHODS, MergeEngine, MergePlan, PartMerge, register_merge_method
from .metrics import calculate_accuracy, calculate_loss
from .sources import SourcePool, is_compatible
from .toolbox import individual_class, make_toolbox

__version__ = "0.1.0"

__all__ = [
    "LLMMergeGA",
    "make_toolbox",
    "individual_class",
    "BenchmarkData",
    "load_benchmark",
    "SourcePool",
    "is_compatible",
    "calculate_accuracy",
    "calculate_loss",
    "GENOMES",
    "GenomeFamily",
    "MERGE_METHODS",
    "register_merge_method",
    "MergePlan",
    "PartMerge",
    "MergeEngine",
    "Evaluator",
    "CachedMap",
    "LLMMergeError",
    "ConfigError",
    "SourceModelError",
    "IncompatibleModelsError",
    "BenchmarkDataError",
    "InvalidGenomeError",
    "EvaluationError",
    "__version__",
]
