"""The verdict (SCIENCE.md, "Measuring the need to tune warmup").

With δ the margin fixed in the spec and 95 % intervals (``bounds``):

- INVALID when a control fails: on the subject Adam's regret must lie above δ (the design can
  show a need for warmup); on every negative control, and on a 1-step placebo warmup where the
  design has one, below δ (it does not invent one);
- REMOVES when Δ_RAdam and Γ both lie below δ, and RAdam's best cell at w=0 is not shown to
  fail more often than Adam's best cell (the paired difference's interval reaches 0);
- NO_WARMUP_BUT_WORSE when Δ_RAdam lies below δ and Γ above it;
- NEEDS when Δ_RAdam lies above δ;
- INCONCLUSIVE otherwise, with the seeds at which a new study would likely decide it.

``rule`` is the decision on arrays, so that simulations decide thousands of studies at once
with exactly the code a study is decided by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from api_schemas import StudySpec
from api_schemas.analysis import (
    ControlCheck,
    Interval,
    Verdict,
    VerdictOutcome,
    WorkloadAnalysis,
)
from service.analysis.bounds import Gap, seeds_for
from service.analysis.cells import Outcomes
from service.analysis.estimands import Estimates, PairEstimates

MAX_SEEDS = 64
"""The most seeds a study may ask for (StudySpec.seeds_per_trial)."""
MIN_SEEDS = 4
"""Fewer seeds give no verdict: see README, "How far to trust the verdict"."""
OUTCOMES = (
    VerdictOutcome.INVALID,
    VerdictOutcome.REMOVES,
    VerdictOutcome.NO_WARMUP_BUT_WORSE,
    VerdictOutcome.NEEDS,
    VerdictOutcome.INCONCLUSIVE,
)
"""``rule``'s codes, in order."""


@dataclass(frozen=True)
class Measured:
    """One workload as the verdict sees it."""

    outcomes: Outcomes
    estimates: Estimates | None
    analysis: WorkloadAnalysis


def rule(
    delta: float,
    radam_regret: Gap,
    gap: Gap,
    positive: Gap,
    negatives: list[Gap],
    failure_low: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    """The verdict of every study in the batch, as an index into OUTCOMES.

    ``positive`` is Adam's regret on the subject; ``negatives`` the regrets that must lie
    below δ; ``failure_low`` the low end of RAdam's minus Adam's failure rate at their best.
    NaN anywhere fails the comparison it is in (an estimate that is missing proves nothing).
    """
    controls = positive.low > delta
    for negative in negatives:
        controls &= negative.high < delta
    no_warmup = radam_regret.high < delta
    removes = no_warmup & (gap.high < delta) & (failure_low <= 0)
    worse = no_warmup & (gap.low > delta)
    needs = radam_regret.low > delta
    return np.select(
        [~controls, removes, worse, needs],
        [0, 1, 2, 3],
        default=4,
    ).astype(np.int64)


def _check(label: str, role: str, regret: Interval | None, delta: float) -> ControlCheck:
    if role == "positive":
        requirement = f"Adam's warmup regret above δ (interval low > {delta:.3g})"
        passed = regret is not None and regret.low > delta
    else:
        requirement = f"Adam's warmup regret below δ (interval high < {delta:.3g})"
        passed = regret is not None and regret.high < delta
    return ControlCheck(
        label=label,
        role="positive" if role == "positive" else "negative",
        requirement=requirement,
        adam_regret=regret,
        passed=passed,
    )


def _failed_control(check: ControlCheck) -> str:
    if check.role == "positive":
        return (
            f"on {check.label} Adam's warmup regret is not shown above δ: with its lr retuned "
            "Adam does not clearly need warmup there, so the study cannot show whether RAdam "
            "removes that need"
        )
    return (
        f"on the negative control {check.label} Adam's warmup regret is not shown below δ: a "
        "warmup effect where none is expected points to a bug, or to too few seeds"
    )


def _negatives(workloads: list[Measured], pair: PairEstimates) -> list[tuple[str, Gap]]:
    """The regrets whose truth is 0: Adam's on negative controls, and the subject's placebo."""
    subject = workloads[0]
    adam = subject.outcomes.arms[pair.adam]
    out: list[tuple[str, Gap]] = []
    assert subject.estimates is not None
    if subject.estimates.placebo is not None:
        placebo = subject.estimates.placebo
        out.append((f"{subject.outcomes.label} · 1-step placebo warmup", _arm(placebo, pair.adam)))
    for m in workloads[1:]:
        if m.analysis.role != "negative" or m.estimates is None:
            continue
        if adam in m.outcomes.arms:
            out.append((m.outcomes.label, _arm(m.estimates.regret, m.outcomes.arms.index(adam))))
        else:
            nan = np.asarray(np.nan)
            out.append((m.outcomes.label, Gap(nan, nan, nan, subject.outcomes.loss.shape[-1])))
    return out


def _arm(g: Gap, index: int) -> Gap:
    """One arm's slice of a per-arm gap."""
    return g.arm(index)


def decide(spec: StudySpec, workloads: list[Measured], seeds: int) -> Verdict | str:
    """The verdict on the subject (``workloads[0]``), or why there cannot be one."""
    subject = workloads[0]
    if not subject.outcomes.arms:
        return "no trial of the subject workload has finished yet"
    if subject.estimates is None:
        return "the verdict needs w=0 (warmup_steps 0 or schedule none) and at least 2 seeds"
    if not subject.estimates.pairs:
        return "the verdict compares a RAdam arm with an Adam arm; the study needs both"
    delta = spec.analysis.margin
    if delta is None:
        return (
            "the margin δ is not fixed in the spec (analysis.margin): a verdict needs it fixed "
            "before the run, not chosen after seeing the results"
        )
    if seeds < MIN_SEEDS:
        return (
            f"a verdict needs at least {MIN_SEEDS} seeds per trial: with fewer, the t quantile "
            "makes every interval too wide to decide, and a failure no seed happened to show "
            "goes unseen too often"
        )
    pair = subject.estimates.pairs[0]
    radam_g, adam_g = (
        _arm(subject.estimates.regret, pair.radam),
        _arm(subject.estimates.regret, pair.adam),
    )
    radam_regret, adam_regret, gap = radam_g.at(), adam_g.at(), pair.gap.at()
    if radam_regret is None or adam_regret is None or gap is None:
        return "RAdam's or Adam's estimates could not be made: some cells have no results yet"
    negatives = _negatives(workloads, pair)
    failure_low = pair.failures_at_best.low
    code = int(rule(delta, radam_g, pair.gap, adam_g, [g for _, g in negatives], failure_low))
    outcome = OUTCOMES[code]
    controls = [_check(subject.outcomes.label, "positive", adam_regret, delta)]
    controls += [_check(label, "negative", g.at(), delta) for label, g in negatives]
    arms = subject.outcomes.arms
    failure = subject.analysis.pairs[0].failure_at_best if subject.analysis.pairs else None
    reasons, undecided = _reasons(outcome, controls, radam_regret, gap, delta, failure_low)
    needed = [seeds_for(i, delta, seeds, MAX_SEEDS) for i in undecided]
    return Verdict(
        outcome=outcome,
        radam_arm=arms[pair.radam].label,
        adam_arm=arms[pair.adam].label,
        margin=delta,
        radam_regret=radam_regret,
        adam_regret=adam_regret,
        gap=gap,
        failure_difference=failure,
        controls=controls,
        seeds_needed=None if not needed or None in needed else max(n for n in needed if n),
        reasons=reasons,
    )


def _reasons(
    outcome: VerdictOutcome,
    controls: list[ControlCheck],
    radam: Interval,
    gap: Interval,
    delta: float,
    failure_low: npt.NDArray[np.float64],
) -> tuple[list[str], list[Interval]]:
    """Why ``outcome``, in words, and the intervals that straddle δ (INCONCLUSIVE)."""
    if outcome == VerdictOutcome.INVALID:
        return [_failed_control(c) for c in controls if not c.passed], []
    if outcome == VerdictOutcome.REMOVES:
        return [
            "RAdam's warmup regret and its gap to Adam with tuned warmup both lie below δ, and "
            "it is not shown to fail more often"
        ], []
    if outcome == VerdictOutcome.NO_WARMUP_BUT_WORSE:
        return [
            "warmup does not help RAdam (its regret lies below δ), but RAdam without warmup is "
            "worse than Adam with a tuned warmup by more than δ (Γ lies above δ): it needs no "
            "warmup tuning because it does not reach tuned Adam's loss"
        ], []
    if outcome == VerdictOutcome.NEEDS:
        return ["RAdam's warmup regret lies above δ: warmup still helps it"], []
    if radam.high < delta and gap.high < delta and float(failure_low) > 0:
        return [
            "RAdam's regret and gap lie below δ, but at w=0 it fails more often than Adam at "
            "its best cell (the interval of the difference lies above 0)"
        ], []
    reasons, undecided = [], []
    if not radam.high < delta:
        reasons.append("RAdam's warmup regret interval contains δ")
        undecided.append(radam)
    elif not (gap.high < delta or gap.low > delta):
        reasons.append("RAdam needs no warmup, but its gap to tuned Adam (Γ) contains δ")
        undecided.append(gap)
    return reasons, undecided
