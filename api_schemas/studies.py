"""Study specs (what a person or CI job submits) and study reads (what the service returns)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from api_schemas.search_space import (
    Problem,
    SearchSpace,
    check_search_space,
    grid_cells,
    values_of,
)
from api_schemas.trials import TrialRead
from api_schemas.workloads import Workload

MAX_GRID_CELLS = 100_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SamplerSpec(_Model):
    """How Optuna picks the next trial's parameters.

    ``grid`` runs every combination of the (categorical or fixed) search space once, the
    balanced design the warmup verdict needs; ``tpe`` and ``random`` are free search.
    """

    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = Field(default=0, description="sampler seed; null for a random one")


class PrunerSpec(_Model):
    """Which Optuna pruner stops hopeless trials. A trial is never pruned inside its warmup."""

    type: Literal["none", "median", "percentile"] = "none"
    n_startup_trials: int = Field(default=5, ge=0, description="trials finished before pruning")
    n_warmup_steps: int = Field(default=0, ge=0, description="steps before pruning a trial")
    percentile: float = Field(default=25.0, gt=0, lt=100, description="for type percentile")


class Objective(_Model):
    """What a trial's value is: the mean over its seeds of the final held-out ``metric``."""

    metric: Literal["loss", "accuracy"] = "loss"
    direction: Literal["minimize", "maximize"] | None = Field(
        default=None, description="defaults to minimize for loss, maximize for accuracy"
    )

    @model_validator(mode="after")
    def _direction_matches(self) -> Self:
        expected: Literal["minimize", "maximize"] = (
            "minimize" if self.metric == "loss" else "maximize"
        )
        if self.direction is None:
            self.direction = expected
        elif self.direction != expected:
            raise ValueError(f"direction must be {expected!r} for metric {self.metric!r}")
        return self


class StudySpec(_Model):
    """A study as submitted: what to train, what to search, how many trials, how to judge them."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    workload: Workload
    search_space: SearchSpace
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: int | None = Field(
        default=None, ge=1, le=MAX_GRID_CELLS, description="required unless sampler is grid"
    )
    seeds_per_trial: int = Field(default=3, ge=1, le=64, description="R paired seeds per trial")
    seed: int = Field(default=0, ge=0, description="seed i of every trial is seed + i")
    objective: Objective = Field(default_factory=Objective)
    trial_time_limit_s: float = Field(default=900.0, gt=0, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = check_search_space(self.search_space)
        if not problems:
            problems.extend(self._check_trial_count())
        if problems:
            raise PydanticCustomError(
                "invalid_spec",
                "; ".join(map(str, problems)),
                {"problems": [{"field": p.field, "message": str(p)} for p in problems]},
            )
        return self

    def _check_trial_count(self) -> list[Problem]:
        if self.sampler.type != "grid":
            if self.n_trials is None:
                return [Problem("n_trials", "is required unless sampler.type is grid")]
            return []
        continuous = [n for n, p in self.search_space.items() if values_of(p) is None]
        if continuous:
            return [
                Problem(f"search_space.{n}", "must be categorical, fixed or int for sampler grid")
                for n in continuous
            ]
        size = len(grid_cells(self.search_space))
        if size > MAX_GRID_CELLS:
            return [Problem("search_space", f"has {size} grid cells; at most {MAX_GRID_CELLS}")]
        if self.n_trials is None:
            self.n_trials = size
        elif self.n_trials != size:
            return [Problem("n_trials", f"must equal the grid size ({size}) or be omitted")]
        return []

    @property
    def seeds(self) -> list[int]:
        """The paired seeds every trial of this study trains under."""
        return [self.seed + i for i in range(self.seeds_per_trial)]


class StudyState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"


class TrialCounts(BaseModel):
    """How many trials of a study are in each state."""

    waiting: int = 0
    running: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = Field(default=0, description="failed trials whose parameters were re-run")


class StudyRead(BaseModel):
    """A study as the service sees it now."""

    id: int
    name: str
    state: StudyState
    created_at: datetime
    spec: StudySpec
    counts: TrialCounts
    best_trial: TrialRead | None = None
