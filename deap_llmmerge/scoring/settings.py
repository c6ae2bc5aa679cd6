"""What a run says about scoring: the objectives, the device and the batches (config keys at the top level)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..devices import resolve_device

__all__ = ["ScoringSettings", "FitnessSettings"]


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
    slices: int = Field(4, ge=2)


class ScoringSettings(_Strict):
    """``objectives``: ``benchmark.metric`` names (default: every benchmark's accuracy and loss);
    ``device``: cpu, cuda or cuda:N; ``batch_size``: rows per forward pass (halved on out of memory);
    ``score_memory_mb``: memory for the layer outputs candidates share (default: a quarter of what is free);
    ``fitness``: :class:`FitnessSettings`."""

    objectives: list[str] | None = None
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    score_memory_mb: int | None = Field(None, ge=0)
    fitness: FitnessSettings = FitnessSettings()

    @field_validator("device")
    @classmethod
    def _usable_device(cls, value: str) -> str:
        resolve_device(value)
        return value
