"""Objectives: which metric of which benchmark the search optimises, and in which direction.

An objective is written ``benchmark.metric`` (``qa.accuracy``, ``play.loss``); with one benchmark the
benchmark's name may be left out (``accuracy``). Accuracy is maximised; loss, perplexity (text) and
choice_loss (multiple choice) are minimised. The default is the accuracy and loss of every benchmark, in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .metrics import METRIC_DIRECTIONS

__all__ = ["Objective", "parse_objectives", "METRIC_DIRECTIONS", "SINGLE"]
SINGLE = "benchmark"  # the name of the one benchmark of a run that names none


@dataclass(frozen=True)
class Objective:
    benchmark: str
    metric: str
    label: str

    @property
    def weight(self) -> float:
        return METRIC_DIRECTIONS[self.metric]


def parse_objectives(specs: Sequence[str] | None, benchmarks: Sequence[str],
                     metric_names: Mapping[str, Sequence[str]] | None = None) -> tuple[Objective, ...]:
    """Objectives from ``name.metric`` strings (or the defaults), checked against the benchmarks' names and,
    when ``metric_names`` (benchmark name -> the metrics it measures) is given, against what each measures."""
    single = len(benchmarks) == 1
    if not specs:
        specs = [metric if single else f"{name}.{metric}" for name in benchmarks for metric in ("accuracy", "loss")]
    objectives = []
    for spec in specs:
        name, _, metric = spec.rpartition(".")
        if not name and single:
            name = benchmarks[0]
        if name not in benchmarks:
            raise ConfigError(f"objective {spec!r}: no benchmark named {name!r} (benchmarks: {', '.join(benchmarks)})")
        if metric not in METRIC_DIRECTIONS:
            raise ConfigError(f"objective {spec!r}: unknown metric {metric!r}; known: {', '.join(METRIC_DIRECTIONS)}")
        if metric_names is not None and metric not in metric_names[name]:
            where = "the benchmark" if single else f"benchmark {name!r}"
            raise ConfigError(f"objective {spec!r}: {where} does not measure {metric!r}; it measures "
                              f"{', '.join(metric_names[name])}")
        objectives.append(Objective(name, metric, metric if single else f"{name}.{metric}"))
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"objectives {list(specs)} name one objective twice")
    return tuple(objectives)
