"""The run configuration (YAML): frozen pydantic models, unknown keys rejected, errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .evaluation import resolve_device
from .genomes import GENOMES

__all__ = ["ModelEntry", "GASettings", "RunConfig", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    path: Path
    name: str | None = None


class GASettings(_Strict):
    population_size: int = Field(24, ge=2)
    max_generations: int = Field(10, ge=0)
    crossover_rate: float = Field(0.8, ge=0.0, le=1.0)
    mutation_rate: float = Field(0.1, ge=0.0, le=1.0)
    elitism_rate: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    patience: int | None = Field(None, ge=1)
    tournament_size: int = Field(3, ge=1)
    halloffame_size: int = Field(5, ge=1)
    max_failed_share: float = Field(0.5, ge=0.0, le=1.0)


class RunConfig(_Strict):
    models: list[ModelEntry] = Field(min_length=2)
    benchmark: Path
    validation: Path | None = None
    genome: str = "choice"
    ga: GASettings = GASettings()
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    trust_remote_code: bool = False

    @field_validator("models", mode="before")
    @classmethod
    def _paths_as_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("genome")
    @classmethod
    def _known_genome(cls, value: str) -> str:
        if value not in GENOMES:
            raise ValueError(f"unknown genome family {value!r}; known: {', '.join(GENOMES)}")
        return value

    @field_validator("device")
    @classmethod
    def _usable_device(cls, value: str) -> str:
        resolve_device(value)
        return value

    def resolved(self, base: Path) -> RunConfig:
        """The same config with relative paths taken from ``base``; every path must exist."""
        def resolve(path: Path, key: str) -> Path:
            full = path if path.is_absolute() else base / path
            if not full.exists():
                raise ConfigError(f"config key {key!r}: file not found: {full}")
            return full

        models = [entry.model_copy(update={"path": resolve(entry.path, f"models.{i}.path")})
                  for i, entry in enumerate(self.models)]
        validation = None if self.validation is None else resolve(self.validation, "validation")
        return self.model_copy(update={"models": models, "benchmark": resolve(self.benchmark, "benchmark"),
                                       "validation": validation})


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"config key {key!r}: {message}{more}"


def load_config(path: str | Path) -> RunConfig:
    """Read, validate and resolve a YAML run config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(raw).__name__}")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from exc
    return config.resolved(path.parent)
