"""What a run says about scoring: the objectives, the device and the batches (config keys at the top level)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..devices import resolve_device

__all__ = ["ScoringSettings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoringSettings(_Strict):
    """``objectives``: ``benchmark.metric`` names (default: every benchmark's accuracy and loss);
    ``device``: cpu, cuda or cuda:N; ``batch_size``: rows per forward pass (halved on out of memory);
    ``score_memory_mb``: memory for the layer outputs candidates share (default: a quarter of what is free)."""

    objectives: list[str] | None = None
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    score_memory_mb: int | None = Field(None, ge=0)

    @field_validator("device")
    @classmethod
    def _usable_device(cls, value: str) -> str:
        resolve_device(value)
        return value
