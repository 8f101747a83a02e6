"""The analysis of a study: does it need warmup tuned, per optimizer arm and workload?

What ``GET /v1/studies/{id}/analysis`` returns. The words used throughout:

- **arm**: an optimizer together with the values of the other finite-valued search-space
  parameters that vary in the study, except ``lr``, ``warmup_steps``, ``warmup_schedule`` and
  ``workload`` (e.g. ``radam · beta2=0.98``). Parameters that never vary are not part of it.
- **warmup** ``w``: ``"0"`` for none (schedule ``none``, or a linear warmup of 0 steps), the
  number of steps for a linear warmup (and for ``adam_warmup_reference``, which warms up inside
  the optimizer), or the schedule's name for ``untuned_linear`` / ``untuned_exponential``.
- **outcome** of one seed: its final held-out loss, clipped at the chance loss. Failures are
  *counted, never dropped*: a diverged seed, every seed of a pruned trial and every seed of a
  trial that failed for good (error, time limit, or a lost worker after the last retry) count
  as failures with the chance loss. Failed runs that were re-queued are superseded by the
  re-run and not counted. Trials still waiting or running are not counted yet (``pending``).
- **warmup regret** Δ of an arm: best loss over lr at w=0 minus best loss over (lr, w),
  cross-fitted (cells chosen on half the seeds, evaluated on the other half, averaged over
  random splits) so that it is not biased upward by the winner's curse.
- **intervals**: 95 % paired seed bootstrap (the same resampled seed ids for every cell, arm
  and workload).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

CONFIDENCE = 0.95
"""The level of every interval. A NEEDS verdict when RAdam's true regret is at most the margin
happens in at most (1 - CONFIDENCE) / 2 = 2.5 % of studies (one-sided), and likewise REMOVES
when it is at least the margin."""


class Interval(BaseModel):
    """An estimate with its 95 % interval."""

    estimate: float
    low: float
    high: float


class Rate(BaseModel):
    """A failure rate with its 95 % Wilson score interval."""

    failures: int = Field(ge=0)
    runs: int = Field(ge=0, description="seed runs counted")
    rate: float | None = Field(description="failures / runs; null without runs")
    low: float
    high: float


class OutcomeCounts(BaseModel):
    """What was counted for one workload, and what was not yet."""

    trials: int = Field(description="trials counted: completed, pruned and finally failed")
    completed: int
    pruned: int = Field(description="counted as failures: every seed at the chance loss")
    failed: dict[str, int] = Field(
        default_factory=dict,
        description="finally failed trials by failure kind; every seed at the chance loss "
        "(a trial that failed before its parameters were drawn is counted here, in no cell)",
    )
    superseded: int = Field(description="failed runs re-queued and re-run: not counted")
    pending: int = Field(description="waiting or running: not counted yet")
    seed_runs: int
    failed_seed_runs: int = Field(description="diverged seeds plus every seed of failed trials")
    diverged_seeds: int


class CellTable(BaseModel):
    """One arm's grid of cells: rows are learning rates, columns warmups.

    A ``null`` mean is a cell no trial ran (yet).
    """

    lrs: list[float]
    warmups: list[str]
    mean_loss: list[list[float | None]] = Field(description="[lr][warmup], mean over seeds")
    failures: list[list[int]]
    runs: list[list[int]]


class LearningCurve(BaseModel):
    """A trial's mean-over-seeds training loss every ``report_every`` steps."""

    trial_number: int
    lr: float
    warmup: str
    steps: list[int]
    loss: list[float]


class ArmAnalysis(BaseModel):
    """Everything measured about one arm on one workload. Losses are held-out losses."""

    arm: str
    optimizer: str
    settings: dict[str, bool | int | float | str] = Field(description="the arm's other values")
    best_loss_w0: float | None = Field(description="best mean loss over lr at w=0")
    best_lr_w0: float | None
    best_loss: float | None = Field(description="best mean loss over (lr, w)")
    best_lr: float | None
    best_warmup: str | None
    regret: Interval | None = Field(
        description="warmup regret Δ, cross-fitted, with its bootstrap interval (grid only)"
    )
    naive_regret: float | None = Field(
        description="the same difference chosen and measured on all seeds: biased upward"
    )
    failure_rate_w0: Rate = Field(description="over every lr at w=0")
    failure_rate_best_warmup: Rate = Field(description="over every lr at the best warmup")
    warmup_sensitivity: float | None = Field(
        description="mean over lr of the spread (max - min) of the mean loss across warmups"
    )
    lr_sensitivity_w0: float | None = Field(
        description="spread (max - min) of the mean loss across lr at w=0"
    )
    warmup_importance: float | None = Field(
        description="Optuna's PED-ANOVA importance of warmup against lr within this arm "
        "(0..1, descriptive); null when it cannot be computed"
    )
    cells: CellTable
    curves: list[LearningCurve] = Field(
        default_factory=list,
        description="one per warmup, at the lr where warmup changes the loss most (else at "
        "the arm's best lr)",
    )


class WorkloadAnalysis(BaseModel):
    """One workload of the study: the subject, or a control."""

    label: str
    role: Literal["subject", "negative", "contrast"]
    workload: str = Field(description="the workload's name")
    chance_loss: float = Field(description="the worst value, recorded for every failure")
    counts: OutcomeCounts
    arms: list[ArmAnalysis]


class VerdictOutcome(StrEnum):
    REMOVES = "REMOVES"
    """RAdam's regret is below the margin (interval entirely) and it fails no more often."""
    NEEDS = "NEEDS"
    """RAdam's regret is above the margin (interval entirely): it still needs warmup tuned."""
    INCONCLUSIVE = "INCONCLUSIVE"
    """The interval straddles the margin: more seeds would decide it."""
    INVALID = "INVALID"
    """A control failed: the study could not have shown the answer either way."""


class ControlCheck(BaseModel):
    """Whether one control behaved: Adam's warmup regret on its workload against the margin."""

    label: str
    role: Literal["positive", "negative"]
    requirement: str = Field(description="e.g. 'Adam's regret above δ (interval low > δ)'")
    adam_regret: Interval | None
    passed: bool


class Verdict(BaseModel):
    """Does RAdam remove the need to tune warmup on the subject workload?"""

    outcome: VerdictOutcome
    radam_arm: str
    adam_arm: str
    margin: float = Field(description="δ: regrets below it count as no need to tune warmup")
    margin_source: Literal["spec", "computed"] = Field(
        description="fixed in the spec before the run, or computed as max(0.02, 0.2·Δ_Adam) "
        "from this study's own Adam regret on the subject (not fixed in advance)"
    )
    radam_regret: Interval
    adam_regret: Interval
    regret_difference: Interval = Field(description="Δ_Adam - Δ_RAdam")
    failure_gap: float | None = Field(
        description="RAdam's failure rate at w=0 minus Adam's at its best warmup (over lr); "
        "REMOVES needs it at most 0.05"
    )
    controls: list[ControlCheck]
    seeds_needed: int | None = Field(
        default=None,
        description="INCONCLUSIVE only: seeds per trial that would likely decide it; null "
        "when not even 64 would",
    )
    reasons: list[str] = Field(default_factory=list, description="why this outcome, in words")


class EquivalenceOutcome(StrEnum):
    EQUIVALENT = "EQUIVALENT"
    RADAM_BETTER = "RADAM_BETTER"
    UNTUNED_WARMUP_BETTER = "UNTUNED_WARMUP_BETTER"
    INCONCLUSIVE = "INCONCLUSIVE"


class MaYaratsComparison(BaseModel):
    """Ma & Yarats: RAdam at w=0 against Adam with an untuned 2/(1-β2) warmup, best over lr.

    An equivalence test with the verdict's margin: EQUIVALENT when the interval of the
    difference lies inside (-δ, δ); one of them is better when it lies beyond δ on one side.
    """

    workload: str
    radam_arm: str
    adam_arm: str
    schedule: Literal["untuned_linear", "untuned_exponential"]
    difference: Interval = Field(description="loss(RAdam, w=0) - loss(Adam, untuned warmup)")
    margin: float
    outcome: EquivalenceOutcome


class Analysis(BaseModel):
    """A study's warmup-sensitivity analysis: estimates, intervals, verdict and its statement."""

    study_id: int
    study_name: str
    design: Literal["grid", "free"] = Field(description="grid: a balanced design; free: TPE")
    complete: bool = Field(description="every trial the study will run is counted")
    seeds: list[int] = Field(description="the paired seeds every trial trains under")
    confidence: float = CONFIDENCE
    bootstrap: int = Field(description="bootstrap resamples behind every interval")
    workloads: list[WorkloadAnalysis]
    verdict: Verdict | None = None
    verdict_unavailable: str | None = Field(
        default=None, description="why there is no verdict (e.g. free search needs a grid)"
    )
    ma_yarats: list[MaYaratsComparison] = Field(default_factory=list)
    statement: str = Field(description="the answer in one plain-language paragraph")
    seconds: float = Field(default=0.0, description="time the analysis took")
