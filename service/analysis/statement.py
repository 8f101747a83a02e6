"""The answer in one plain-language paragraph, written from the numbers it summarises."""

from __future__ import annotations

from api_schemas.analysis import (
    EquivalenceOutcome,
    Finding,
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
    VerdictOutcome.NO_WARMUP_BUT_WORSE: "RAdam needs no warmup on {w}, but without it is worse "
    "than Adam with a tuned warmup",
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
    findings: list[Finding],
) -> str:
    """One paragraph: the verdict, the numbers behind it, the controls, the published findings
    it reproduces or contradicts, caveats."""
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
        + f" (margin δ = {verdict.margin:.3g} in held-out loss, fixed in the spec).",
        f"Warmup regret (best loss without warmup minus best with, lr retuned for each): "
        f"{verdict.radam_arm} {_iv(verdict.radam_regret)}, {verdict.adam_arm} "
        f"{_iv(verdict.adam_regret)}. RAdam without warmup against Adam with tuned warmup "
        f"(Γ): {_iv(verdict.gap)}.",
    ]
    failure = verdict.failure_difference
    if failure is not None:
        parts.append(
            f"At their best cells {verdict.radam_arm} without warmup failed in "
            f"{failure.radam_rate:.0%} of seeds and {verdict.adam_arm} (w={failure.adam_warmup}) "
            f"in {failure.adam_rate:.0%}; difference {_iv(failure.difference)}."
        )
    parts += [reason[0].upper() + reason[1:] + "." for reason in verdict.reasons]
    if verdict.seeds_needed is not None:
        parts.append(
            f"A new study with about {verdict.seeds_needed} seeds per trial would decide it "
            "with 80 % power, if the estimates stay where they are."
        )
    controls = [line for w in workloads[1:] if (line := _adam_line(w, verdict.adam_arm))]
    if controls:
        parts.append("Other workloads: " + "; ".join(controls) + ".")
    for c in comparisons:
        if c.outcome is not None:
            parts.append(
                f"Ma & Yarats on {c.workload}: {c.radam_arm} at w=0 minus {c.adam_arm} with "
                f"{c.schedule} warmup is {_iv(c.difference)}: {_EQUIVALENCE[c.outcome]}."
            )
    for f in findings:
        if f.result != "not tested":
            parts.append(f'{f.paper}, "{f.claim}": {f.result} ({f.evidence}).')
    parts.append(
        "The answer holds for this workload, these betas and this run length; "
        "it may differ elsewhere."
    )
    return " ".join(parts)
