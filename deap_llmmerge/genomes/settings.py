"""What a run says about its genomes: the family and the family's settings (config keys at the top level)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..methods.registry import check_method_options
from .methods import default_search_methods
from .registry import GENOMES
from .space import GenomeSpace, parse_granularity

__all__ = ["GenomeSettings", "DepthBounds"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepthBounds(_Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> DepthBounds:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class GenomeSettings(_Strict):
    """``genome``: the family (choice, blend, methods, stack); ``method``: with methods, a merge method or
    ``search`` (then ``search_methods``); ``method_options``: run-wide options per method (normalize,
    rescale, lambda); ``negative_weights``; ``genome_granularity``: layer, group:K or global; ``depth``: the
    bounds of a stack."""

    genome: str = "choice"
    method: str | None = None
    search_methods: list[str] | None = None
    method_options: dict[str, dict[str, Any]] = {}
    negative_weights: bool = False
    genome_granularity: str = "layer"
    depth: DepthBounds | None = None

    @field_validator("genome")
    @classmethod
    def _known_genome(cls, value: str) -> str:
        if value not in GENOMES:
            raise ValueError(f"unknown genome family {value!r}; known: {', '.join(GENOMES)}")
        return value

    @field_validator("genome_granularity")
    @classmethod
    def _granularity(cls, value: str) -> str:
        parse_granularity(value)
        return value

    @field_validator("method_options")
    @classmethod
    def _known_options(cls, value: dict) -> dict:
        check_method_options(value)
        return value

    @field_validator("depth", mode="before")
    @classmethod
    def _depth_pair(cls, value: Any) -> Any:
        """``(min, max)`` as well as ``{min, max}``."""
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return {"min": value[0], "max": value[1]}
        return value

    @model_validator(mode="after")
    def _fits_genome(self) -> GenomeSettings:
        if self.genome == "methods" and self.method is None:
            raise ValueError("genome 'methods' needs a method (ties, dare_ties, ..., or search)")
        if self.genome != "methods" and (self.method is not None or self.search_methods is not None):
            raise ValueError(f"method applies to genome: methods, not {self.genome}")
        if self.depth is not None and self.genome != "stack":
            raise ValueError(f"depth applies to genome: stack, not {self.genome}")
        return self

    def space(self, pool, seed: int = 0) -> GenomeSpace:
        """What genomes of these settings decode against over the sources of ``pool`` (a SourcePool: its
        parts, sources and base model); ``seed`` seeds random methods' draws."""
        search = tuple(self.search_methods or ())
        if self.method == "search" and not search:
            search = default_search_methods(pool.num_sources, pool.base_index)
        options = tuple((name, tuple(sorted(values.items()))) for name, values in self.method_options.items())
        return GenomeSpace(tuple(pool.part_names), pool.num_sources, pool.base_index, self.genome_granularity,
                           self.method, search, self.negative_weights, options, seed,
                           None if self.depth is None else (self.depth.min, self.depth.max))
