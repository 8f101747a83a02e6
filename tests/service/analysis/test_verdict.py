"""The verdict on simulated studies whose answer is planted: right at the advertised rates."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from api_schemas.analysis import Analysis, EquivalenceOutcome, VerdictOutcome
from service.analysis import analyse_outcomes
from tests.service.analysis import simulate

NEGATIVE = {"role": "negative", "workload": {"name": "digits_mlp"}}


def run(
    rng: np.random.Generator,
    adam: float,
    radam: float,
    *,
    seeds: int = 8,
    control: float | None = None,
    bootstrap: int = 500,
    **spec: Any,
) -> Analysis:
    """Analyse one simulated study; ``control`` plants Adam's regret on a negative control."""
    outcomes = [simulate.outcomes(rng, simulate.truth(adam, radam), seeds)]
    if control is not None:
        spec["controls"] = [NEGATIVE]
        means = simulate.truth(control, 0.0)
        outcomes.append(simulate.outcomes(rng, means, seeds, label="digits_mlp"))
    spec["analysis"] = {"bootstrap": bootstrap, **spec.get("analysis", {})}
    study = simulate.spec(seeds, **spec)
    return analyse_outcomes(1, "simulated", study, outcomes, importance=False)


def outcomes_of(n: int, seed: int, **kwargs: Any) -> Counter[VerdictOutcome]:
    rng = np.random.default_rng(seed)
    counts: Counter[VerdictOutcome] = Counter()
    for _ in range(n):
        verdict = run(rng, **kwargs).verdict
        assert verdict is not None
        counts[verdict.outcome] += 1
    return counts


def test_a_planted_warmup_effect_is_detected() -> None:
    counts = outcomes_of(100, seed=1, adam=1.0, radam=0.5)  # δ = 0.2 x 1.0
    assert counts[VerdictOutcome.NEEDS] >= 95, counts


def test_a_planted_null_is_never_needs_and_mostly_removes() -> None:
    counts = outcomes_of(300, seed=2, adam=1.0, radam=0.0)
    assert counts[VerdictOutcome.NEEDS] == 0, counts
    assert counts[VerdictOutcome.REMOVES] >= 270, counts


def test_at_the_margin_needs_is_declared_at_most_at_the_advertised_rate() -> None:
    """True regret exactly δ: NEEDS would be a false positive; advertised at most 2.5 %."""
    counts = outcomes_of(300, seed=3, adam=1.0, radam=0.15, analysis={"margin": 0.15})
    assert counts[VerdictOutcome.NEEDS] <= 0.025 * 300 + 2 * np.sqrt(300 * 0.025), counts


def test_straddling_the_margin_is_inconclusive_and_says_how_many_seeds_would_decide() -> None:
    rng = np.random.default_rng(4)
    verdicts = [run(rng, 1.0, 0.08, seeds=4, analysis={"margin": 0.15}).verdict for _ in range(20)]
    inconclusive = [v for v in verdicts if v and v.outcome == VerdictOutcome.INCONCLUSIVE]
    assert len(inconclusive) >= 10
    needed = [v.seeds_needed for v in inconclusive if v.seeds_needed is not None]
    assert needed and all(n > 4 for n in needed)


def test_the_margin_is_computed_from_adams_regret_unless_the_spec_fixes_it() -> None:
    rng = np.random.default_rng(5)
    computed = run(rng, 1.0, 0.0).verdict
    fixed = run(rng, 1.0, 0.0, analysis={"margin": 0.3}).verdict
    assert computed is not None and computed.margin_source == "computed"
    assert computed.margin == pytest.approx(max(0.02, 0.2 * computed.adam_regret.estimate))
    assert fixed is not None and (fixed.margin, fixed.margin_source) == (0.3, "spec")


def test_a_negative_control_with_a_warmup_effect_makes_the_study_invalid() -> None:
    rng = np.random.default_rng(6)
    bad = run(rng, 1.0, 0.0, control=0.8)
    good = run(rng, 1.0, 0.0, control=0.0)
    assert bad.verdict is not None and bad.verdict.outcome == VerdictOutcome.INVALID
    assert [c.passed for c in bad.verdict.controls] == [True, False]
    assert "digits_mlp" in bad.statement
    assert good.verdict is not None and good.verdict.outcome == VerdictOutcome.REMOVES
    assert [c.label for c in good.verdict.controls] == ["postln_transformer", "digits_mlp"]


def test_a_subject_where_adam_needs_no_warmup_makes_the_study_invalid() -> None:
    verdict = run(np.random.default_rng(7), 0.0, 0.0).verdict
    assert verdict is not None and verdict.outcome == VerdictOutcome.INVALID
    assert verdict.controls[0].role == "positive" and not verdict.controls[0].passed


def test_radam_that_fails_more_often_without_warmup_cannot_remove_the_need() -> None:
    rng = np.random.default_rng(8)
    means = simulate.truth(1.0, 0.0)
    means[1, [0, 2], 0] = simulate.CHANCE  # RAdam at w=0 fails at two more lrs than Adam does
    o = simulate.outcomes(rng, means, 8)
    analysis = analyse_outcomes(1, "s", simulate.spec(8), [o], importance=False)
    verdict = analysis.verdict
    assert verdict is not None and verdict.radam_regret.high < verdict.margin
    assert verdict.failure_gap is not None and verdict.failure_gap > 0.05
    assert verdict.outcome == VerdictOutcome.INCONCLUSIVE
    assert "fails" in verdict.reasons[0]


def test_ma_yarats_radam_at_w0_is_equivalent_to_adam_with_untuned_warmup() -> None:
    rng = np.random.default_rng(0)
    o = simulate.outcomes(rng, simulate.truth(1.0, 0.0), 8)
    o.warmups = ["0", "50", "untuned_linear"]  # the third column: Adam's best there is 0.52
    analysis = analyse_outcomes(1, "s", simulate.spec(8), [o], importance=False)
    (comparison,) = analysis.ma_yarats
    assert comparison.schedule == "untuned_linear"
    assert comparison.difference.low < 0.5 - 0.52 < comparison.difference.high
    assert comparison.outcome == EquivalenceOutcome.EQUIVALENT
    assert "Ma & Yarats" in analysis.statement


def test_free_search_gets_the_descriptive_parts_and_the_reason_the_verdict_needs_a_grid() -> None:
    rng = np.random.default_rng(10)
    o = simulate.outcomes(rng, simulate.truth(1.0, 0.0), 4)
    spec = simulate.spec(4, sampler={"type": "tpe"}, n_trials=24)
    analysis = analyse_outcomes(1, "s", spec, [o], importance=False)
    assert analysis.design == "free" and analysis.verdict is None
    assert analysis.verdict_unavailable is not None and "grid" in analysis.verdict_unavailable
    adam = analysis.workloads[0].arms[0]
    assert adam.regret is None and adam.best_loss is not None and adam.naive_regret is not None
    assert adam.failure_rate_w0.failures == 4  # the highest lr at w=0, all four seeds
    assert "No verdict" in analysis.statement
