"""The verdict (SCIENCE.md, "Measuring the need to tune warmup") and the Ma & Yarats comparison.

With δ the margin and intervals at 95 %:

- INVALID when a control fails: on the subject Adam's regret interval must lie above δ (the
  design can show a need for warmup), on every negative control below δ (it does not invent one);
- REMOVES when RAdam's regret interval lies below δ and RAdam at w=0 fails (over the lr grid)
  at most 5 points more often than Adam at its best warmup;
- NEEDS when RAdam's regret interval lies above δ;
- INCONCLUSIVE otherwise, with the seeds per trial that would likely decide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from api_schemas import StudySpec
from api_schemas.analysis import (
    ControlCheck,
    EquivalenceOutcome,
    Interval,
    MaYaratsComparison,
    Verdict,
    VerdictOutcome,
    WorkloadAnalysis,
)
from service.analysis.cells import Arm, Outcomes
from service.analysis.estimates import Estimates

RADAMS = ("radam", "radam_reference")
ADAMS = ("adam", "adamw")
MAX_FAILURE_GAP = 0.05
MAX_SEEDS = 64
"""The most seeds a study may ask for (StudySpec.seeds_per_trial)."""


@dataclass(frozen=True)
class Measured:
    """One workload as the verdict sees it."""

    outcomes: Outcomes
    estimates: Estimates | None
    analysis: WorkloadAnalysis


def pair(arms: list[Arm]) -> tuple[int, int] | None:
    """(RAdam arm, Adam arm) to compare: the first RAdam arm, and the Adam arm with the same
    other settings (e.g. beta2) if there is one, else the first Adam arm."""
    radams = [i for i, a in enumerate(arms) if a.optimizer in RADAMS]
    adams = [i for i, a in enumerate(arms) if a.optimizer in ADAMS]
    if not radams or not adams:
        return None
    r = radams[0]
    same = [i for i in adams if arms[i].settings == arms[r].settings]
    return r, (same or adams)[0]


def margin(spec: StudySpec, adam_regret: float) -> tuple[float, str]:
    """δ from the spec, or max(0.02, 0.2·Δ_Adam) computed from the subject's Adam regret."""
    if spec.analysis.margin is not None:
        return spec.analysis.margin, "spec"
    return max(0.02, 0.2 * max(adam_regret, 0.0)), "computed"


def seeds_needed(interval: Interval, delta: float, seeds: int) -> int | None:
    """Seeds per trial at which an interval this far from δ would likely exclude it.

    The half-width on δ's side shrinks like 1/sqrt(R); None when not even MAX_SEEDS would do.
    """
    distance = abs(interval.estimate - delta)
    half = (
        interval.high - interval.estimate
        if interval.estimate < delta
        else interval.estimate - interval.low
    )
    if distance == 0:
        return None
    needed = math.ceil(seeds * (half / distance) ** 2)
    return max(needed, seeds + 1) if needed <= MAX_SEEDS else None


def _control(m: Measured, adam: Arm, role: str, delta: float, seeds: int) -> ControlCheck:
    index = m.outcomes.arms.index(adam) if adam in m.outcomes.arms else None
    regret = None if index is None or m.estimates is None else m.estimates.regret.arm(index, seeds)
    if role == "positive":
        requirement = f"Adam's warmup regret above δ (interval low > {delta:.3g})"
        passed = regret is not None and regret.low > delta
    else:
        requirement = f"Adam's warmup regret below δ (interval high < {delta:.3g})"
        passed = regret is not None and regret.high < delta
    return ControlCheck(
        label=m.outcomes.label,
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


def decide(spec: StudySpec, workloads: list[Measured], seeds: int) -> Verdict | str:
    """The verdict on the subject (``workloads[0]``), or why there cannot be one."""
    subject = workloads[0]
    arms = subject.outcomes.arms
    if not arms:
        return "no trial of the subject workload has finished yet"
    chosen = pair(arms)
    if chosen is None:
        return "the verdict compares a RAdam arm with an Adam arm; the study needs both"
    if subject.estimates is None:
        return "the verdict needs w=0 (warmup_steps 0 or schedule none) and at least 2 seeds"
    r, a = chosen
    regrets = subject.estimates.regret
    radam_regret, adam_regret = regrets.arm(r, seeds), regrets.arm(a, seeds)
    difference = regrets.between(a, regrets, r, seeds)
    if radam_regret is None or adam_regret is None or difference is None:
        return "RAdam's or Adam's regret could not be estimated: some cells have no results yet"
    delta, source = margin(spec, adam_regret.estimate)
    controls = [_control(subject, arms[a], "positive", delta, seeds)]
    controls += [
        _control(m, arms[a], "negative", delta, seeds)
        for m in workloads[1:]
        if m.analysis.role == "negative"
    ]
    radam, adam = subject.analysis.arms[r], subject.analysis.arms[a]
    gap = None
    if radam.failure_rate_w0.rate is not None and adam.failure_rate_best_warmup.rate is not None:
        gap = radam.failure_rate_w0.rate - adam.failure_rate_best_warmup.rate

    reasons, needed = [], None
    if not all(c.passed for c in controls):
        outcome = VerdictOutcome.INVALID
        reasons += [_failed_control(c) for c in controls if not c.passed]
    elif radam_regret.high < delta and (gap is None or gap <= MAX_FAILURE_GAP):
        outcome = VerdictOutcome.REMOVES
        reasons.append("RAdam's regret interval lies below δ and it fails no more often")
    elif radam_regret.low > delta:
        outcome = VerdictOutcome.NEEDS
        reasons.append("RAdam's regret interval lies above δ")
    else:
        outcome = VerdictOutcome.INCONCLUSIVE
        if radam_regret.high < delta:
            reasons.append(
                f"RAdam's regret is below δ but at w=0 it fails {gap:.0%} more often than Adam "
                f"at its best warmup (at most {MAX_FAILURE_GAP:.0%} allowed)"
            )
        else:
            reasons.append("RAdam's regret interval contains δ")
            needed = seeds_needed(radam_regret, delta, seeds)
    return Verdict(
        outcome=outcome,
        radam_arm=arms[r].label,
        adam_arm=arms[a].label,
        margin=delta,
        margin_source="spec" if source == "spec" else "computed",
        radam_regret=radam_regret,
        adam_regret=adam_regret,
        regret_difference=difference,
        failure_gap=gap,
        controls=controls,
        seeds_needed=needed,
        reasons=reasons,
    )


def equivalence(difference: Interval, delta: float) -> EquivalenceOutcome:
    """Inside (-δ, δ): equivalent; beyond δ on one side: that side is better."""
    if -delta < difference.low and difference.high < delta:
        return EquivalenceOutcome.EQUIVALENT
    if difference.high < -delta:
        return EquivalenceOutcome.RADAM_BETTER
    if difference.low > delta:
        return EquivalenceOutcome.UNTUNED_WARMUP_BETTER
    return EquivalenceOutcome.INCONCLUSIVE


def ma_yarats(workloads: list[Measured], delta: float, seeds: int) -> list[MaYaratsComparison]:
    """RAdam at w=0 against Adam with each untuned warmup the design has, on every workload."""
    comparisons = []
    for m in workloads:
        chosen = pair(m.outcomes.arms)
        if chosen is None or m.estimates is None:
            continue
        r, a = chosen
        for schedule, untuned in m.estimates.untuned.items():
            difference = m.estimates.best_w0.between(r, untuned, a, seeds)
            if difference is None:
                continue
            comparisons.append(
                MaYaratsComparison(
                    workload=m.outcomes.label,
                    radam_arm=m.outcomes.arms[r].label,
                    adam_arm=m.outcomes.arms[a].label,
                    schedule="untuned_linear"
                    if schedule == "untuned_linear"
                    else ("untuned_exponential"),
                    difference=difference,
                    margin=delta,
                    outcome=equivalence(difference, delta),
                )
            )
    return comparisons
