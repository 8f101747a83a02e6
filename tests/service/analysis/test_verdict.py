"""The verdict on single simulated studies: each outcome, its reasons and its statement.

The error rates themselves are measured over thousands of studies in test_calibration.py.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from api_schemas.analysis import Analysis, EquivalenceOutcome, VerdictOutcome
from service.analysis import analyse_outcomes, bounds, verdict
from tests.service.analysis import simulate

NEGATIVE = {"role": "negative", "workload": {"name": "digits_mlp"}}
CONTRAST = {"role": "contrast", "workload": {"name": "preln_transformer"}}
DELTA = 0.15


def run(
    seed: int,
    means: np.ndarray,
    *,
    seeds: int = 16,
    control: np.ndarray | None = None,
    margin: float | None = DELTA,
    **spec: Any,
) -> Analysis:
    """Analyse one simulated study with the planted cell ``means`` (and a negative control)."""
    rng = np.random.default_rng(seed)
    outcomes = [simulate.outcomes(rng, means, seeds)]
    if control is not None:
        spec["controls"] = [NEGATIVE]
        outcomes.append(simulate.outcomes(rng, control, seeds, label="digits_mlp"))
    spec["analysis"] = {"bootstrap": 200} | ({} if margin is None else {"margin": margin})
    return analyse_outcomes(1, "simulated", simulate.spec(seeds, **spec), outcomes)


def test_a_planted_warmup_effect_is_needs() -> None:
    analysis = run(1, simulate.truth(1.0, 0.6))
    assert analysis.verdict is not None and analysis.verdict.outcome == VerdictOutcome.NEEDS
    assert "warmup still helps" in analysis.statement


def test_a_planted_null_is_removes_with_radam_against_tuned_adam_in_the_statement() -> None:
    analysis = run(2, simulate.truth(1.0, 0.0), control=simulate.truth(0.0, 0.0))
    verdict = analysis.verdict
    assert verdict is not None and verdict.outcome == VerdictOutcome.REMOVES, verdict
    assert verdict.gap.high < DELTA and verdict.radam_regret.high < DELTA
    assert [c.label for c in verdict.controls] == ["postln_transformer", "digits_mlp"]
    assert "Adam with tuned warmup (Γ)" in analysis.statement
    liu = analysis.findings[0]
    assert liu.paper.startswith("Liu") and liu.result == "reproduced"


def test_radam_that_needs_no_warmup_but_is_worse_than_tuned_adam_is_said_plainly() -> None:
    means = simulate.truth(1.0, 0.0)
    means[1] += 0.5  # RAdam 0.5 worse than Adam in every cell
    analysis = run(3, means)
    verdict = analysis.verdict
    assert verdict is not None and verdict.outcome == VerdictOutcome.NO_WARMUP_BUT_WORSE
    assert verdict.gap.low > DELTA
    assert "worse than Adam with a tuned warmup" in analysis.statement
    assert analysis.findings[0].result == "contradicted"


def test_without_a_margin_in_the_spec_there_is_no_verdict() -> None:
    analysis = run(4, simulate.truth(1.0, 0.0), margin=None)
    assert analysis.verdict is None
    assert analysis.verdict_unavailable is not None
    assert "analysis.margin" in analysis.verdict_unavailable
    assert analysis.workloads[0].pairs[0].gap is not None  # the estimates are still there


def test_too_few_seeds_give_no_verdict_and_say_why() -> None:
    analysis = run(5, simulate.truth(1.0, 0.0), seeds=3)
    assert analysis.verdict is None and "at least 4 seeds" in str(analysis.verdict_unavailable)


def test_straddling_the_margin_is_inconclusive_and_names_seeds_for_80_percent_power() -> None:
    verdicts = [run(s, simulate.truth(1.0, 0.08), seeds=6).verdict for s in range(10)]
    inconclusive = [v for v in verdicts if v and v.outcome == VerdictOutcome.INCONCLUSIVE]
    assert len(inconclusive) >= 5
    needed = [v.seeds_needed for v in inconclusive if v.seeds_needed is not None]
    assert needed and all(n > 6 for n in needed)


def test_a_negative_control_with_a_warmup_effect_makes_the_study_invalid() -> None:
    bad = run(6, simulate.truth(1.0, 0.0), control=simulate.truth(0.8, 0.0))
    assert bad.verdict is not None and bad.verdict.outcome == VerdictOutcome.INVALID
    assert [c.passed for c in bad.verdict.controls] == [True, False]
    assert "digits_mlp" in bad.statement


def test_a_subject_where_adam_needs_no_warmup_makes_the_study_invalid() -> None:
    verdict = run(7, simulate.truth(0.0, 0.0)).verdict
    assert verdict is not None and verdict.outcome == VerdictOutcome.INVALID
    assert verdict.controls[0].role == "positive" and not verdict.controls[0].passed


def test_a_placebo_warmup_is_a_negative_control_in_place() -> None:
    """A 1-step warmup changes nothing: Adam's regret against it must lie below δ."""
    rng = np.random.default_rng(8)
    means = simulate.truth(1.0, 0.0)
    means[:, :, 1] = means[:, :, 0]  # the second warmup column is the placebo: same as w=0
    o = simulate.outcomes(rng, means, 16)
    o.warmups = ["0", "1", "100"]
    spec = simulate.spec(16, analysis={"margin": DELTA})
    verdict = analyse_outcomes(1, "s", spec, [o]).verdict
    assert verdict is not None
    placebo = [c for c in verdict.controls if "placebo" in c.label]
    assert len(placebo) == 1 and placebo[0].passed
    means[0, :, 1] = means[0, :, 2]  # a "placebo" that works: a bug in the schedule
    o = simulate.outcomes(rng, means, 16)
    o.warmups = ["0", "1", "100"]
    verdict = analyse_outcomes(1, "s", spec, [o]).verdict
    assert verdict is not None and verdict.outcome == VerdictOutcome.INVALID


def test_radam_that_fails_more_often_at_its_best_cell_cannot_remove_the_need() -> None:
    rng = np.random.default_rng(9)
    means = simulate.truth(1.0, 0.0)
    fail = np.zeros_like(means)
    fail[1, :3, 0] = 0.6  # RAdam at w=0 fails in 60 % of seeds at every lr, Adam's best never
    o = simulate.outcomes(rng, means, 16, fail=fail)
    analysis = analyse_outcomes(1, "s", simulate.spec(16, analysis={"margin": DELTA}), [o])
    pair = analysis.workloads[0].pairs[0]
    assert pair.failure_at_best is not None and pair.failure_at_best.difference.low > 0
    at_3e3 = next(f for f in pair.failures_by_lr if f.lr == 3e-3)
    assert at_3e3.radam_rate > at_3e3.adam_rate and at_3e3.difference.low > 0
    # Were the losses alone to pass, the failure difference would still refuse REMOVES.
    zero = np.zeros(())
    passing = bounds.Gap(zero, zero - 0.1, zero + 0.1, 16)
    control = bounds.Gap(zero + 1, zero + 0.9, zero + 1.1, 16)
    rule = partial(verdict.rule, DELTA, passing, passing, control, [])
    assert verdict.OUTCOMES[int(rule(np.asarray(-0.1)))] == VerdictOutcome.REMOVES
    assert verdict.OUTCOMES[int(rule(np.asarray(0.05)))] == VerdictOutcome.INCONCLUSIVE


def test_ma_yarats_per_lr_and_best_over_lr() -> None:
    rng = np.random.default_rng(10)
    o = simulate.outcomes(rng, simulate.truth(1.0, 0.0), 16)
    o.warmups = ["0", "50", "untuned_linear"]  # the third column: Adam's best there is 0.52
    analysis = analyse_outcomes(1, "s", simulate.spec(16, analysis={"margin": DELTA}), [o])
    (comparison,) = analysis.ma_yarats
    assert comparison.schedule == "untuned_linear"
    assert comparison.difference.low < 0.5 - 0.52 < comparison.difference.high
    assert comparison.outcome == EquivalenceOutcome.EQUIVALENT
    assert [d.lr for d in comparison.by_lr] == simulate.LRS
    assert "Ma & Yarats" in analysis.statement
    assert analysis.findings[1].result == "reproduced"


def test_xiong_is_reproduced_when_warmup_widens_the_post_ln_range_only() -> None:
    rng = np.random.default_rng(11)
    post = simulate.truth(1.0, 0.0)
    post[:, 2, 0] = simulate.CHANCE  # without warmup lr 1e-2 fails; with warmup it trains
    pre = simulate.truth(0.0, 0.0)  # Pre-LN: the same lrs fail with and without warmup
    outcomes = [
        simulate.outcomes(rng, post, 16),
        simulate.outcomes(rng, pre, 16, label="preln_transformer"),
    ]
    spec = simulate.spec(16, controls=[CONTRAST], analysis={"margin": DELTA, "bootstrap": 200})
    analysis = analyse_outcomes(1, "s", spec, outcomes)
    adam_post = analysis.workloads[0].arms[0]
    assert adam_post.stable_gain is not None and adam_post.stable_gain.low is not None
    assert adam_post.stable_gain.low > 0
    adam_pre = analysis.workloads[1].arms[0]
    assert adam_pre.stable_gain is not None and adam_pre.stable_gain.estimate == 0
    xiong = analysis.findings[2]
    assert xiong.paper.startswith("Xiong") and xiong.result == "reproduced", xiong


def test_free_search_gets_the_descriptive_parts_and_the_reason_the_verdict_needs_a_grid() -> None:
    rng = np.random.default_rng(12)
    o = simulate.outcomes(rng, simulate.truth(1.0, 0.0), 4)
    spec = simulate.spec(4, sampler={"type": "tpe"}, n_trials=24)
    analysis = analyse_outcomes(1, "s", spec, [o])
    assert analysis.design == "free" and analysis.verdict is None
    assert analysis.verdict_unavailable is not None and "grid" in analysis.verdict_unavailable
    adam = analysis.workloads[0].arms[0]
    assert adam.regret is None and adam.best_loss is not None
    assert adam.failure_rate_w0.failures == 4  # the highest lr at w=0, all four seeds
    assert "No verdict" in analysis.statement
