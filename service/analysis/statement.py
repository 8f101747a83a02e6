"""The answer in one plain-language paragraph, written from the numbers it summarises."""

from __future__ import annotations

from api_schemas.analysis import (
    EquivalenceOutcome,
    Interval,
    MaYaratsComparison,
    Verdict,
    VerdictOutcome,
    WorkloadAnalysis,
)


def _iv(interval: Interval | None) -> str:
    if interval is None:
        return "not estimated"
    return f"{interval.estimate:.3f} (95 % interval {interval.low:.3f} to {interval.high:.3f})"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


_HEADLINES = {
    VerdictOutcome.REMOVES: "RAdam removes the need to tune warmup on {w}",
    VerdictOutcome.NEEDS: "RAdam does not remove the need to tune warmup on {w}",
    VerdictOutcome.INCONCLUSIVE: "This study cannot yet say whether RAdam removes the need to "
    "tune warmup on {w}",
    VerdictOutcome.INVALID: "This study cannot answer whether RAdam removes the need to tune "
    "warmup on {w}, because a control failed",
}

_EQUIVALENCE = {
    EquivalenceOutcome.EQUIVALENT: "equivalent within δ",
    EquivalenceOutcome.RADAM_BETTER: "RAdam better by more than δ",
    EquivalenceOutcome.UNTUNED_WARMUP_BETTER: "the untuned warmup better by more than δ",
    EquivalenceOutcome.INCONCLUSIVE: "neither shown equivalent nor different",
}


def _adam_line(workload: WorkloadAnalysis, adam_arm: str) -> str | None:
    arm = next((a for a in workload.arms if a.arm == adam_arm), None)
    if arm is None or arm.regret is None:
        return None
    return f"{workload.label} ({workload.role}): Adam's warmup regret {_iv(arm.regret)}"


def statement(
    verdict: Verdict | None,
    unavailable: str | None,
    workloads: list[WorkloadAnalysis],
    comparisons: list[MaYaratsComparison],
) -> str:
    """One paragraph: the verdict, the numbers behind it, the controls, Ma & Yarats, caveats."""
    subject = workloads[0]
    if verdict is None:
        best = [
            f"{a.arm} reaches {a.best_loss:.3f} (at w={a.best_warmup}), "
            f"{a.best_loss_w0:.3f} without warmup"
            for a in subject.arms
            if a.best_loss is not None and a.best_loss_w0 is not None
        ]
        described = "; ".join(best) or "no arm has results at w=0 yet"
        return (
            f"No verdict: {unavailable}. What was measured on {subject.label}: {described}. "
            "These best losses are chosen and measured on the same seeds, so they flatter "
            "every arm a little."
        )
    parts = [
        _HEADLINES[verdict.outcome].format(w=subject.label)
        + f" (margin δ = {verdict.margin:.3g} in held-out loss, "
        + (
            "fixed in the spec"
            if verdict.margin_source == "spec"
            else "computed as max(0.02, 0.2·Δ_Adam) from this study, not fixed in advance"
        )
        + ").",
        f"Warmup regret (best loss without warmup minus best with, lr retuned for each): "
        f"{verdict.radam_arm} {_iv(verdict.radam_regret)}, {verdict.adam_arm} "
        f"{_iv(verdict.adam_regret)}; Adam's minus RAdam's {_iv(verdict.regret_difference)}.",
    ]
    radam = next((a for a in subject.arms if a.arm == verdict.radam_arm), None)
    adam = next((a for a in subject.arms if a.arm == verdict.adam_arm), None)
    if radam and adam and radam.failure_rate_w0.rate is not None:
        adam_rate = adam.failure_rate_best_warmup.rate
        parts.append(
            f"Over the lr grid, {radam.arm} without warmup failed in "
            f"{radam.failure_rate_w0.rate:.0%} of runs, {adam.arm} without warmup in "
            f"{_pct(adam.failure_rate_w0.rate)} and at its best warmup "
            f"(w={adam.best_warmup}) in {_pct(adam_rate)}."
        )
    parts += [reason[0].upper() + reason[1:] + "." for reason in verdict.reasons]
    if verdict.seeds_needed is not None:
        parts.append(f"About {verdict.seeds_needed} seeds per trial would likely decide it.")
    controls = [line for w in workloads[1:] if (line := _adam_line(w, verdict.adam_arm))]
    if controls:
        parts.append("Other workloads: " + "; ".join(controls) + ".")
    for c in comparisons:
        parts.append(
            f"Ma & Yarats on {c.workload}: RAdam at w=0 minus Adam with {c.schedule} warmup "
            f"is {_iv(c.difference)}: {_EQUIVALENCE[c.outcome]}."
        )
    parts.append(
        "The answer holds for this workload, these betas and this run length; "
        "it may differ elsewhere."
    )
    return " ".join(parts)
