"""Study specs (what a person or CI job submits) and study reads (what the service returns)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from api_schemas.search_space import (
    Problem,
    Scalar,
    SearchSpace,
    check_search_space,
    grid_cells,
    grid_size,
    n_values,
)
from api_schemas.trials import TrialRead
from api_schemas.workloads import Workload

MAX_GRID_CELLS = 100_000
MAX_SEEDS_PER_TRIAL = 64
MAX_INT32 = 2**31 - 1
"""The largest number an id, a step or a seed may be: the database's INTEGER columns hold it."""
MAX_SAMPLER_SEED = MAX_INT32
"""numpy (under Optuna's samplers) takes seeds in 0..2^32-1; a restarted service re-seeds with
``seed + trials so far`` (fewer than 2^31), so a 31-bit seed never leaves numpy's range."""
MAX_SEED = MAX_INT32 - MAX_SEEDS_PER_TRIAL
"""A study's first paired seed: ``seed + i`` for every seed i stays a 31-bit number (torch and
numpy take it, and so does the database)."""

WORKLOAD_PARAM = "workload"
"""The trial parameter naming, by label, which of the study's workloads a trial trains.

Present only in studies with controls; the search space may not name it (it is not in PARAMS).
"""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SamplerSpec(_Model):
    """How Optuna picks the next trial's parameters.

    ``grid`` runs every combination of the (categorical or fixed) search space once, the
    balanced design the warmup verdict needs; ``tpe`` and ``random`` are free search.
    """

    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SAMPLER_SEED)] | None = Field(
        default=0, description="sampler seed, 0..2^31-1; null for a random one"
    )


class PrunerSpec(_Model):
    """Which Optuna pruner stops hopeless trials (free search only: a grid refuses one).

    A trial is never pruned inside its warmup: its linear, untuned or in-optimizer warmup, and
    RAdam's implicit one (``service.pruning``).
    """

    type: Literal["none", "median", "percentile"] = "none"
    n_startup_trials: StrictInt = Field(
        default=5, ge=0, le=MAX_INT32, description="trials finished before pruning"
    )
    n_warmup_steps: StrictInt = Field(
        default=0, ge=0, le=MAX_INT32, description="steps before pruning a trial"
    )
    percentile: StrictFloat = Field(default=25.0, gt=0, lt=100, description="for type percentile")


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


class Control(_Model):
    """A second workload run over the same search space, to check that the study can answer.

    ``negative``: a workload where warmup should not matter (e.g. an MLP); Adam's warmup regret
    must stay below the margin there, or the verdict is INVALID. ``contrast``: a workload shown
    beside the subject for comparison (e.g. Pre-LN against Post-LN), with no pass or fail.
    """

    role: Literal["negative", "contrast"]
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="how trials and the report name this workload; defaults to its name",
    )
    workload: Workload

    @property
    def name(self) -> str:
        """The label, or the workload's name when no label was given."""
        return self.label or self.workload.name


class AnalysisSpec(_Model):
    """How the analysis judges the study. Fixed at submit time, before any result is seen."""

    margin: StrictFloat | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description=(
            "δ, in held-out loss: a warmup regret (or RAdam's gap to tuned Adam) below δ "
            "counts as none. The verdict needs it fixed here, before the run; without it the "
            "analysis gives every estimate but no verdict."
        ),
    )
    bootstrap: StrictInt = Field(
        default=1000,
        ge=100,
        le=20_000,
        description="paired seed bootstrap resamples behind the stable lr range (lr50, G)",
    )


class StudySpec(_Model):
    """A study as submitted: what to train, what to search, how many trials, how to judge them.

    ``workload`` is the subject (and the positive control: Adam must need warmup there);
    ``controls`` run the same search space on other workloads. With controls, every trial
    carries the parameter ``workload`` (a label) and a grid runs every cell on every workload.

    Rules between fields, which the schema alone cannot state (each answered with a 422 naming
    its field): ``n_trials`` is required unless ``sampler.type`` is ``grid``; for a grid every
    parameter is categorical, fixed or a non-log int, and ``n_trials`` is omitted or equals the
    number of cells (conditions honoured, times the workloads), at most 100,000; search-space
    names are from the known parameters, ``optimizer`` and ``lr`` are required and carry no
    condition, a condition names a categorical or fixed parameter and values it can take, and
    conditions form no cycle; ``low <= high``, ``low > 0`` when ``log``; ``objective.direction``
    matches ``objective.metric``; workload labels are distinct; ``seed + seeds_per_trial - 1``
    stays 31-bit (the bound on ``seed`` ensures it).
    """

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    workload: Workload
    search_space: SearchSpace
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    n_trials: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_GRID_CELLS,
        description="required unless sampler is grid; for a grid, omitted or its size",
    )
    seeds_per_trial: StrictInt = Field(
        default=3, ge=1, le=MAX_SEEDS_PER_TRIAL, description="R paired seeds per trial"
    )
    seed: StrictInt = Field(
        default=0, ge=0, le=MAX_SEED, description="seed i of every trial is seed + i"
    )
    objective: Objective = Field(default_factory=Objective)
    trial_time_limit_s: StrictFloat = Field(default=900.0, gt=0, le=7 * 24 * 3600)
    controls: list[Control] = Field(default_factory=list, max_length=16)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = check_search_space(self.search_space)
        problems.extend(self._check_labels())
        problems.extend(self._check_pruner())
        if not problems:
            problems.extend(self._check_trial_count())
        if problems:
            raise PydanticCustomError(
                "invalid_spec",
                "; ".join(map(str, problems)),
                {"problems": [{"field": p.field, "message": str(p)} for p in problems]},
            )
        return self

    def _check_pruner(self) -> list[Problem]:
        """A grid is the verdict's design: every cell must run to the end."""
        if self.sampler.type == "grid" and self.pruner.type != "none":
            return [
                Problem(
                    "pruner.type",
                    "must be none with sampler grid: the verdict counts a pruned cell as a "
                    "failure in every seed, and a pruner compares early losses, which untuned "
                    "warmups and RAdam's own implicit warmup keep high for hundreds of steps",
                )
            ]
        return []

    def _check_trial_count(self) -> list[Problem]:
        if self.sampler.type != "grid":
            if self.n_trials is None:
                return [Problem("n_trials", "is required unless sampler.type is grid")]
            return []
        continuous = [n for n, p in self.search_space.items() if n_values(p) is None]
        if continuous:
            return [
                Problem(f"search_space.{n}", "must be categorical, fixed or int for sampler grid")
                for n in continuous
            ]
        # Counted, not built: a spec of a few KB can describe 10^12 cells.
        cells = grid_size(self.search_space)
        assert cells is not None  # every parameter has a finite list of values
        size = cells * len(self.workloads)
        if size > MAX_GRID_CELLS:
            return [
                Problem(
                    "search_space",
                    f"has {size} grid cells (over {len(self.workloads)} workload(s)); "
                    f"at most {MAX_GRID_CELLS}",
                )
            ]
        if self.n_trials is None:
            self.n_trials = size
        elif self.n_trials != size:
            return [Problem("n_trials", f"must equal the grid size ({size}) or be omitted")]
        return []

    def _check_labels(self) -> list[Problem]:
        problems: list[Problem] = []
        seen = {self.workload.name: "the study's workload"}
        for i, control in enumerate(self.controls):
            label = control.name
            if label in seen:
                field = f"controls[{i}].label"
                problems.append(
                    Problem(
                        field,
                        f"{label!r} is already the label of {seen[label]}; "
                        "give each workload a distinct label",
                    )
                )
            seen.setdefault(label, f"controls[{i}]")
        return problems

    @property
    def workloads(self) -> dict[str, Workload]:
        """Every workload the study trains, by label: the subject first, then the controls."""
        return {self.workload.name: self.workload} | {c.name: c.workload for c in self.controls}

    def workload_for(self, label: object) -> Workload:
        """The workload a trial whose ``workload`` parameter is ``label`` trains (None: subject)."""
        if label is None:
            return self.workload
        return self.workloads[str(label)]

    def grid(self) -> list[dict[str, Scalar]]:
        """Every trial of a grid study: each search-space cell on each workload.

        Without controls the cells are exactly ``grid_cells(search_space)``.
        """
        cells = grid_cells(self.search_space)
        if not self.controls:
            return cells
        return [{**cell, WORKLOAD_PARAM: label} for cell in cells for label in self.workloads]

    @property
    def seeds(self) -> list[int]:
        """The paired seeds every trial of this study trains under."""
        return [self.seed + i for i in range(self.seeds_per_trial)]


class StudyState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    """Every trial the study will run is final."""
    CANCELLED = "cancelled"
    """Stopped by a person: no trial is leased any more; running ones stop at their next report."""

    def is_final(self) -> bool:
        return self != StudyState.RUNNING


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
