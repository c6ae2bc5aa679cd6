"""What a run says about the search: selection at the top level, the GA's numbers under ``ga``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["GASettings", "EvolveSettings", "AdaptiveMutation", "CMAESSettings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdaptiveMutation(_Strict):
    """Multiply the mutation rate by ``factor`` while fewer than ``threshold`` of the merges are distinct."""

    threshold: float = Field(0.5, gt=0.0, le=1.0)
    factor: float = Field(2.0, ge=1.0)


class GASettings(_Strict):
    """The original design's hyperparameters and the loop's own: ``mutation_rate`` per gene,
    ``crossover_rate`` per pair, ``elitism_rate`` of the population kept (tournament selection), ``seed``
    (None: not seeded), ``patience`` (generations without improvement before stopping), ``max_failed_share``
    of a generation's candidates that may fail before the run stops; ``loop``: generations scored whole
    (generational) or children scored as workers free up (steady_state, :mod:`.steady_state`)."""

    population_size: int = Field(24, ge=2)
    max_generations: int = Field(10, ge=0)
    crossover_rate: float = Field(0.8, ge=0.0, le=1.0)
    mutation_rate: float = Field(0.1, ge=0.0, le=1.0)
    elitism_rate: float = Field(0.1, ge=0.0, le=1.0)
    seed: int | None = 0
    patience: int | None = Field(None, ge=1)
    tournament_size: int = Field(3, ge=1)
    halloffame_size: int = Field(5, ge=1)
    max_failed_share: float = Field(0.5, ge=0.0, le=1.0)
    adaptive_mutation: AdaptiveMutation | None = None
    loop: Literal["generational", "steady_state"] = "generational"


class CMAESSettings(_Strict):
    """``sigma``: the initial step size, in gene units (most genes range over [0, 1])."""

    sigma: float = Field(0.2, gt=0.0)


class EvolveSettings(_Strict):
    """``algorithm``: the genetic algorithm (ga) or CMA-ES (cmaes: ``population_size`` is its lambda,
    ``max_generations`` its generations; bounded-float genomes only); ``selection``: tournament
    (lexicographic over the objectives) or nsga2; ``ga``: :class:`GASettings`; ``cmaes``:
    :class:`CMAESSettings`."""

    algorithm: Literal["ga", "cmaes"] = "ga"
    selection: Literal["tournament", "nsga2"] = "tournament"
    ga: GASettings = GASettings()
    cmaes: CMAESSettings = CMAESSettings()

    @model_validator(mode="after")
    def _cmaes_selects_itself(self) -> EvolveSettings:
        if self.algorithm == "cmaes" and self.selection == "nsga2":
            raise ValueError("selection nsga2 does not apply to algorithm cmaes (it ranks lexicographically)")
        return self
