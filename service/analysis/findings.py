"""What the study says of the three published findings (SCIENCE.md, "The question")."""

from __future__ import annotations

import math

from api_schemas.analysis import (
    ArmAnalysis,
    Bounded,
    EquivalenceOutcome,
    Finding,
    MaYaratsComparison,
    Verdict,
    VerdictOutcome,
    WorkloadAnalysis,
)

LIU = "Liu et al. 2020 (RAdam)"
MA_YARATS = "Ma & Yarats 2021"
XIONG = "Xiong et al. 2020 (Pre-LN)"


def _liu(verdict: Verdict | None) -> Finding:
    claim = "RAdam without warmup is as good as Adam with a tuned warmup"
    if verdict is None or verdict.outcome == VerdictOutcome.INVALID:
        why = "no valid verdict" if verdict is None else "a control failed"
        return Finding(paper=LIU, claim=claim, result="not tested", evidence=why)
    result = {
        VerdictOutcome.REMOVES: "reproduced",
        VerdictOutcome.NO_WARMUP_BUT_WORSE: "contradicted",
        VerdictOutcome.NEEDS: "contradicted",
    }.get(verdict.outcome, "undecided")
    g, r = verdict.gap, verdict.radam_regret
    evidence = (
        f"{verdict.outcome.value}: Δ_RAdam {r.estimate:.3f} [{r.low:.3f}, {r.high:.3f}], "
        f"Γ {g.estimate:.3f} [{g.low:.3f}, {g.high:.3f}], δ = {verdict.margin:.3g}"
    )
    return Finding(paper=LIU, claim=claim, result=result, evidence=evidence)  # type: ignore[arg-type]


def _ma_yarats(subject: str, comparisons: list[MaYaratsComparison]) -> Finding:
    claim = "RAdam without warmup behaves like Adam with an untuned 2/(1-β2) warmup"
    mine = [c for c in comparisons if c.workload == subject and c.outcome is not None]
    if not mine:
        return Finding(
            paper=MA_YARATS,
            claim=claim,
            result="not tested",
            evidence="the design has no untuned warmup, or no margin",
        )
    outcomes = {c.outcome for c in mine}
    if outcomes == {EquivalenceOutcome.EQUIVALENT}:
        result = "reproduced"
    elif outcomes & {EquivalenceOutcome.RADAM_BETTER, EquivalenceOutcome.UNTUNED_WARMUP_BETTER}:
        result = "contradicted"
    else:
        result = "undecided"
    evidence = "; ".join(
        f"{c.radam_arm} vs {c.adam_arm} with {c.schedule}: {c.difference.estimate:.3f} "
        f"[{c.difference.low:.3f}, {c.difference.high:.3f}] ({c.outcome})"
        for c in mine
    )
    return Finding(paper=MA_YARATS, claim=claim, result=result, evidence=evidence)  # type: ignore[arg-type]


def _gain(workload: WorkloadAnalysis) -> tuple[ArmAnalysis, Bounded] | None:
    adam = next((a for a in workload.arms if a.optimizer in ("adam", "adamw")), None)
    if adam is None or adam.stable_gain is None:
        return None
    return adam, adam.stable_gain


def _ends(b: Bounded) -> tuple[float, float]:
    return (
        -math.inf if b.low is None else b.low,
        math.inf if b.high is None else b.high,
    )


def _xiong(workloads: list[WorkloadAnalysis]) -> Finding:
    claim = (
        "warmup widens the range of stable lrs of a Post-LN Transformer (G > 0) much more "
        "than of a Pre-LN one"
    )
    subject = _gain(workloads[0])
    contrast = next((w for w in workloads[1:] if w.role == "contrast"), None)
    other = None if contrast is None else _gain(contrast)
    if subject is None or other is None or contrast is None:
        return Finding(
            paper=XIONG,
            claim=claim,
            result="not tested",
            evidence="needs Adam's stable-range gain G on the subject and on a contrast workload",
        )
    (_, g_subject), (_, g_contrast) = subject, other
    s_low, s_high = _ends(g_subject)
    c_low, c_high = _ends(g_contrast)
    if s_low > 0 and c_high < s_low:
        result = "reproduced"
    elif s_high <= 0 or c_low > s_high:
        result = "contradicted"
    else:
        result = "undecided"
    evidence = (
        f"Adam's G (log2 lr50 gain) on {workloads[0].label}: {g_subject.describe('.2f')}; "
        f"on {contrast.label}: {g_contrast.describe('.2f')}"
    )
    return Finding(paper=XIONG, claim=claim, result=result, evidence=evidence)  # type: ignore[arg-type]


def findings(
    verdict: Verdict | None,
    workloads: list[WorkloadAnalysis],
    comparisons: list[MaYaratsComparison],
) -> list[Finding]:
    """Liu et al., Ma & Yarats and Xiong et al., each reproduced, contradicted or undecided."""
    return [_liu(verdict), _ma_yarats(workloads[0].label, comparisons), _xiong(workloads)]
