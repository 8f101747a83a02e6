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
- **warmup regret** Δ of an arm: best loss over lr at w=0 minus best loss over (lr, w).
- **Γ** of a RAdam arm: its best loss over lr at w=0 minus the best loss over (lr, w) of the
  Adam arm with the same other settings: is RAdam without warmup as good as tuned Adam?
- **intervals** (95 %): every loss estimand is a gap between best cells; its interval comes
  from Student t intervals of the paired differences of every pair of cells, Bonferroni-
  corrected, so that it holds whichever cells are best (no winner's curse). The estimate is the
  plug-in, inside its interval. Failure-rate differences use Newcombe's paired interval; lr50
  and G a paired seed bootstrap.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

CONFIDENCE = 0.95
"""The level of every interval; each end errs in at most (1 - CONFIDENCE) / 2 = 2.5 % of studies
under normal seed noise. Measured on 4,000 simulated studies per truth at 4, 6, 8 and 16 seeds
(README, "How far to trust the verdict"): a wrong REMOVES, NEEDS or NO_WARMUP_BUT_WORSE with the
true regret or gap exactly at the margin, near-tied cells included, in at most 0.4 % of studies;
never REMOVES for a RAdam uniformly worse than tuned Adam. The exception: a best cell that fails
with probability p shows no failure among R seeds with probability (1 - p)^R, and then looks
better than it is (p = 0.1: a wrong REMOVES in 5 % of studies at 6 seeds, 15 % at 8)."""


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


class LrEffect(BaseModel):
    """One lr's warmup effect: loss at w=0 minus the best loss over warmups at that lr."""

    lr: float
    effect: Interval | None = Field(description="null where a cell has no results yet")


class Bounded(BaseModel):
    """An estimate whose interval may run past the design's grid.

    A null ``estimate`` is censored (``censored`` says on which side); a null ``low`` or
    ``high`` means the bound lies beyond the grid on that side.
    """

    estimate: float | None
    low: float | None
    high: float | None
    censored: Literal["below_grid", "above_grid"] | None = None

    def describe(self, digits: str = ".3g") -> str:
        """``estimate [low, high]``, "grid end" for a bound beyond the grid."""
        estimate = str(self.censored) if self.estimate is None else format(self.estimate, digits)
        low = "grid end" if self.low is None else format(self.low, digits)
        high = "grid end" if self.high is None else format(self.high, digits)
        return f"{estimate} [{low}, {high}]"


class StableRange(BaseModel):
    """lr50 of one (arm, warmup): the lr at which half the seeds fail (isotonic in log lr)."""

    warmup: str
    lr50: Bounded


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
        description="warmup regret Δ: best over lr at w=0 minus best over (lr, w); plug-in "
        "estimate with its simultaneous t interval (grid only)"
    )
    placebo_regret: Interval | None = Field(
        default=None,
        description="Δ with only w=0 and a 1-step warmup (when the design has one): its truth "
        "is 0, so it checks the estimator in place",
    )
    warmup_effect: list[LrEffect] = Field(
        default_factory=list, description="per lr: loss at w=0 minus the best over warmups"
    )
    stable_range: list[StableRange] = Field(
        default_factory=list, description="lr50 per warmup, with paired-bootstrap intervals"
    )
    stable_gain: Bounded | None = Field(
        default=None,
        description="G = log2(lr50 at stable_gain_warmup / lr50 at w=0): how far warmup "
        "widens the range of lrs that train (Xiong et al.)",
    )
    stable_gain_warmup: str | None = Field(
        default=None, description="the warmup with the highest lr50 other than w=0"
    )
    failure_rate_w0: Rate = Field(description="over every lr at w=0")
    failure_rate_best_warmup: Rate = Field(description="over every lr at the best warmup")
    cells: CellTable
    curves: list[LearningCurve] = Field(
        default_factory=list,
        description="one per warmup, at the lr where warmup changes the loss most (else at "
        "the arm's best lr)",
    )


class FailureDifference(BaseModel):
    """RAdam's failure rate at w=0 minus Adam's, on the same seeds, with Newcombe's interval."""

    lr: float | None = Field(description="the lr of both cells; null at each arm's best cell")
    adam_warmup: str = Field(description="Adam's warmup: the best at this lr (or overall)")
    radam_rate: float
    adam_rate: float
    difference: Interval


class LrDifference(BaseModel):
    """A paired loss difference at one lr, with its t interval (per lr, not simultaneous)."""

    lr: float
    difference: Interval | None


class EquivalenceOutcome(StrEnum):
    EQUIVALENT = "EQUIVALENT"
    RADAM_BETTER = "RADAM_BETTER"
    UNTUNED_WARMUP_BETTER = "UNTUNED_WARMUP_BETTER"
    INCONCLUSIVE = "INCONCLUSIVE"


class MaYaratsComparison(BaseModel):
    """Ma & Yarats: RAdam at w=0 against Adam with an untuned 2/(1-β2) warmup.

    An equivalence test with the verdict's margin on the best over lr of each: EQUIVALENT when
    the interval of the difference lies inside (-δ, δ); one of them is better when it lies
    beyond δ on one side. ``by_lr`` gives the same difference at every lr.
    """

    workload: str
    radam_arm: str
    adam_arm: str
    schedule: Literal["untuned_linear", "untuned_exponential"]
    difference: Interval = Field(description="best loss(RAdam, w=0) - best loss(Adam, untuned)")
    margin: float | None
    outcome: EquivalenceOutcome | None = Field(description="null without a margin in the spec")
    by_lr: list[LrDifference] = Field(default_factory=list)


class PairAnalysis(BaseModel):
    """A RAdam arm against the Adam arm of the same other settings, on one workload."""

    radam_arm: str
    adam_arm: str
    radam_regret: Interval | None = Field(description="Δ_RAdam: does warmup still help RAdam?")
    adam_regret: Interval | None = Field(description="Δ_Adam: the positive control")
    gap: Interval | None = Field(
        description="Γ = best RAdam at w=0 over lr minus best Adam over (lr, w): is RAdam "
        "without warmup as good as Adam with tuned warmup? (Liu et al.'s practical claim)"
    )
    failure_at_best: FailureDifference | None = Field(
        description="at RAdam's best cell at w=0 and Adam's best cell"
    )
    failures_by_lr: list[FailureDifference] = Field(default_factory=list)
    ma_yarats: list[MaYaratsComparison] = Field(default_factory=list)


class WorkloadAnalysis(BaseModel):
    """One workload of the study: the subject, or a control."""

    label: str
    role: Literal["subject", "negative", "contrast"]
    workload: str = Field(description="the workload's name")
    chance_loss: float = Field(description="the worst value, recorded for every failure")
    counts: OutcomeCounts
    arms: list[ArmAnalysis]
    pairs: list[PairAnalysis] = Field(default_factory=list)


class VerdictOutcome(StrEnum):
    REMOVES = "REMOVES"
    """Δ_RAdam and Γ both below δ (intervals entirely), and RAdam at w=0 is not shown to fail
    more often than Adam at its best: use RAdam without warmup and lose nothing."""
    NO_WARMUP_BUT_WORSE = "NO_WARMUP_BUT_WORSE"
    """Δ_RAdam below δ but Γ above it: RAdam needs no warmup, yet is worse than Adam with a
    tuned warmup."""
    NEEDS = "NEEDS"
    """Δ_RAdam above δ (interval entirely): RAdam still needs warmup tuned."""
    INCONCLUSIVE = "INCONCLUSIVE"
    """An interval straddles δ: more seeds would decide it."""
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
    margin: float = Field(description="δ, fixed in the spec before the run")
    radam_regret: Interval = Field(description="Δ_RAdam on the subject")
    adam_regret: Interval = Field(description="Δ_Adam on the subject (the positive control)")
    gap: Interval = Field(description="Γ on the subject: RAdam at w=0 against tuned Adam")
    failure_difference: FailureDifference | None = Field(
        description="RAdam's failure rate at its best w=0 cell minus Adam's at its best cell; "
        "REMOVES needs it not shown above 0 (interval low ≤ 0)"
    )
    controls: list[ControlCheck]
    seeds_needed: int | None = Field(
        default=None,
        description="INCONCLUSIVE only: seeds per trial at which the undecided interval would "
        "exclude δ with 80 % power, if its estimate and spread stay as they are; null when not "
        "even 64 would. A new study at that many seeds, never a re-read of this one.",
    )
    reasons: list[str] = Field(default_factory=list, description="why this outcome, in words")


class Finding(BaseModel):
    """One published claim and what this study says of it."""

    paper: str
    claim: str
    result: Literal["reproduced", "contradicted", "undecided", "not tested"]
    evidence: str


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
    ma_yarats: list[MaYaratsComparison] = Field(
        default_factory=list, description="every workload's and pair's, gathered"
    )
    findings: list[Finding] = Field(
        default_factory=list, description="Liu et al., Ma & Yarats, Xiong et al.: what holds"
    )
    statement: str = Field(description="the answer in one plain-language paragraph")
    seconds: float = Field(default=0.0, description="time the analysis took")
