"""The run configuration (YAML): frozen pydantic models, unknown keys rejected, errors naming the key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError, validation_message
from ..evolve.settings import EvolveSettings, GASettings
from ..genomes.registry import get_family
from ..genomes.settings import GenomeSettings
from ..scoring.benchmarks import KINDS
from ..scoring.objectives import SINGLE, parse_objectives
from ..scoring.settings import ScoringSettings

__all__ = ["ModelEntry", "BenchmarkEntry", "GASettings", "RunConfig", "load_config"]

_SUFFIX_KINDS = {".pt": "tensors", ".txt": "text"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(_Strict):
    path: Path
    name: str | None = None


class BenchmarkEntry(_Strict):
    """A benchmark file: tensors (``.pt``), or JSONL / Parquet / text built with the tokenizer; or an
    lm-evaluation-harness task (``lm_eval: NAME``, with ``include_path``, ``split``, ``limit``,
    ``num_fewshot``; see :mod:`~deap_llmmerge.scoring.lm_eval_tasks`)."""

    path: Path | None = None
    kind: Literal["tensors", "completion", "multiple_choice", "text"] | None = None
    window: int = Field(128, ge=2)
    normalization: Literal["chars", "tokens", "none"] = "chars"
    max_items: int | None = Field(None, ge=1)
    anchors: float | None = Field(None, gt=0)  # overrides fitness.anchors for this benchmark
    fields: dict[Literal["context", "choices", "answer"], str] = {}  # multiple choice: the rows' own key names
    lm_eval: str | None = None
    include_path: Path | None = None
    split: str | None = None
    limit: float | None = Field(None, gt=0)
    num_fewshot: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _kind_known(self) -> BenchmarkEntry:
        if (self.path is None) == (self.lm_eval is None):
            raise ValueError("give either path (a benchmark file) or lm_eval (an lm-evaluation-harness task)")
        task_keys = [key for key in ("include_path", "split", "limit", "num_fewshot") if getattr(self, key) is not None]
        if self.lm_eval is None and task_keys:
            raise ValueError(f"{task_keys[0]} applies to lm_eval tasks only")
        if self.lm_eval is not None and self.kind is not None:
            raise ValueError("an lm_eval task's kind comes from the task (leave kind out)")
        if self.path is not None and self.kind is None and self.path.suffix not in _SUFFIX_KINDS:
            raise ValueError(f"say which kind {self.path.name} holds (kind: {', '.join(KINDS)})")
        return self

    @property
    def resolved_kind(self) -> str | None:
        """The entry's kind (None for an lm_eval task: the task says)."""
        if self.lm_eval is not None:
            return None
        return self.kind or _SUFFIX_KINDS[self.path.suffix]


class RunConfig(GenomeSettings, ScoringSettings, EvolveSettings):
    """A whole run: the sources, the benchmarks, and the settings groups it is made of (genomes, scoring,
    selection and ``ga``), whose keys sit at the top level of the YAML; it is passed whole where those
    groups are wanted."""

    models: list[ModelEntry] = Field(min_length=2)
    base: Path | None = None
    benchmark: dict[str, BenchmarkEntry]
    validation: dict[str, BenchmarkEntry] | None = None
    tokenizer: Path | None = None
    trust_remote_code: bool = False
    output_dtype: Literal["bfloat16", "float16", "float32"] | None = None  # saved models' dtype (default: the sources')

    @field_validator("models", mode="before")
    @classmethod
    def _paths_as_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("benchmark", "validation", mode="before")
    @classmethod
    def _benchmark_shapes(cls, value: Any) -> Any:
        """One path, one ``{path, kind, ...}`` entry, or named entries (each a path or an entry)."""
        if isinstance(value, (str, Path)):
            return {SINGLE: {"path": value}}
        if isinstance(value, dict) and "path" in value:
            return {SINGLE: value}
        if isinstance(value, dict):
            return {name: {"path": item} if isinstance(item, (str, Path)) else item for name, item in value.items()}
        return value

    @model_validator(mode="after")
    def _anchors_per_benchmark(self) -> RunConfig:
        """A benchmark entry's ``anchors`` joins ``fitness.per_benchmark``, where the scoring reads it."""
        own = {name: entry.anchors for name, entry in self.benchmark.items() if entry.anchors is not None}
        if own:
            fitness = self.fitness.model_copy(update={"per_benchmark": {**self.fitness.per_benchmark, **own}})
            object.__setattr__(self, "fitness", fitness)
        return self

    @model_validator(mode="after")
    def _objectives_name_benchmarks(self) -> RunConfig:
        try:
            parse_objectives(self.objectives, list(self.benchmark))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _cmaes_needs_floats(self) -> RunConfig:
        if self.algorithm == "cmaes" and get_family(self.genome).bounds is None:
            raise ValueError(f"algorithm cmaes needs a genome of bounded floats (blend, methods), not {self.genome}")
        return self

    def benchmarks(self) -> dict[str, BenchmarkEntry]:
        return dict(self.benchmark)

    def validations(self) -> dict[str, BenchmarkEntry]:
        return dict(self.validation or {})

    def resolved(self, base: Path) -> RunConfig:
        """The same config with relative paths taken from ``base``; every path must exist."""
        def resolve(path: Path, key: str) -> Path:
            full = path if path.is_absolute() else base / path
            if not full.exists():
                raise ConfigError(f"config key {key!r}: file not found: {full}")
            return full.absolute()

        def resolve_benchmarks(value: dict[str, BenchmarkEntry] | None, key: str) -> dict | None:
            if value is None:
                return None
            out = {}
            for name, entry in value.items():
                where = key if name == SINGLE else f"{key}.{name}"
                for field in ("path", "include_path"):
                    if getattr(entry, field) is not None:
                        named = where if field == "path" else f"{where}.{field}"
                        entry = entry.model_copy(update={field: resolve(getattr(entry, field), named)})
                out[name] = entry
            return out

        models = [entry.model_copy(update={"path": resolve(entry.path, f"models.{i}.path")})
                  for i, entry in enumerate(self.models)]
        return self.model_copy(update={
            "models": models,
            "base": None if self.base is None else resolve(self.base, "base"),
            "benchmark": resolve_benchmarks(self.benchmark, "benchmark"),
            "validation": resolve_benchmarks(self.validation, "validation"),
            "tokenizer": None if self.tokenizer is None else resolve(self.tokenizer, "tokenizer"),
        })


def _flat_args(annotation: Any) -> list:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [inner for arg in args for inner in _flat_args(arg)]


def _unknown_key(raw: dict, model: type[BaseModel], prefix: str = "") -> str | None:
    """The first key of ``raw`` that ``model`` does not know, with the closest known key; nested models too."""
    known = list(model.model_fields)
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            return f"unknown key {prefix + str(key)!r}{hint}"
        annotation = model.model_fields[key].annotation
        nested = next((t for t in _flat_args(annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if nested is None or not isinstance(value, dict):
            continue
        if nested is BenchmarkEntry and "path" not in value:  # named benchmarks: one entry each
            named = [(f"{prefix}{key}.{name}.", item) for name, item in value.items() if isinstance(item, dict)]
        else:
            named = [(f"{prefix}{key}.", value)]
        for where, item in named:
            found = _unknown_key(item, nested, where)
            if found:
                return found
    return None


def _one_line(error: ValidationError) -> str:
    key, message = validation_message(error, hidden=(SINGLE,))
    return f"config key {key or '(top level)'!r}: {message}"


def load_config(path: str | Path) -> RunConfig:
    """Read, validate and resolve a YAML run config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file ({exc.reason})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(raw).__name__}")
    unknown = _unknown_key(raw, RunConfig)
    if unknown:
        raise ConfigError(f"{path}: {unknown}")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from exc
    return config.resolved(path.parent)
