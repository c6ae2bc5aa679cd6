"""What a run says about scoring: the objectives, the device and the batches (config keys at the top level)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..devices import resolve_device

__all__ = ["ScoringSettings", "FitnessSettings", "CombinedObjective", "objectives_setting"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FitnessSettings(_Strict):
    """Cheaper fitness (:mod:`.cheap`), off by default: ``anchors`` (items per benchmark, or a share when below
    1) after a first generation scored on everything, ``per_benchmark`` overrides (a benchmark entry's own
    ``anchors:``), ``refresh_tolerance`` (choose anchors again when the best's estimate was off by more),
    ``racing`` (stop candidates that cannot make it, in ``slices`` of the items)."""

    anchors: float | None = Field(None, gt=0)
    per_benchmark: dict[str, float] = {}
    refresh_tolerance: float = Field(0.02, gt=0)
    racing: bool = False
    slices: int = Field(8, ge=2)


class CombinedObjective(_Strict):
    """One objective, the weighted mean of ``mean``'s ``benchmark.metric`` values (weights default to equal;
    checked against the benchmarks by :func:`~deap_llmmerge.scoring.objectives.parse_objectives`)."""

    mean: list[str]
    weights: list[float] | None = None


def objectives_setting(objectives: object) -> object:
    """The ``objectives`` keyword as the settings take it: a mapping (one combined objective) as it is, any
    other sequence as a list."""
    return objectives if objectives is None or isinstance(objectives, Mapping) else list(objectives)


class ScoringSettings(_Strict):
    """``objectives``: ``benchmark.metric`` names (default: every benchmark's accuracy and loss), any of them
    a :class:`CombinedObjective`, or one combined objective alone;
    ``device``: cpu, cuda or cuda:N; ``batch_size``: rows per forward pass (halved on out of memory);
    ``score_memory_mb``: memory for the layer outputs candidates share (default: a quarter of what is free);
    ``fitness``: :class:`FitnessSettings`."""

    objectives: CombinedObjective | list[str | CombinedObjective] | None = None
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    score_memory_mb: int | None = Field(None, ge=0)
    fitness: FitnessSettings = FitnessSettings()

    @field_validator("device")
    @classmethod
    def _usable_device(cls, value: str) -> str:
        resolve_device(value)
        return value
