"""Gate checks judged on known trials, and the JUnit report read back by a JUnit parser."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml
from pydantic import ValidationError

from api_schemas import Failure as TrialFailure
from api_schemas import FailureKind, SeedResult, TrialRead, TrialState
from hps.gate import (
    CheckResult,
    GateSpec,
    GateSummary,
    check_name,
    judge_trials,
    junit_xml,
)

CHANCE = math.log(8)
STUDY: dict[str, Any] = {"name": "g"}


def _trial(
    number: int,
    params: dict[str, Any],
    losses: list[float] | None = None,
    *,
    state: TrialState = TrialState.COMPLETED,
    failure: FailureKind | None = None,
) -> TrialRead:
    seeds = [
        SeedResult(seed=i, loss=loss, diverged=loss >= CHANCE, steps=10)
        for i, loss in enumerate(losses or [])
    ]
    return TrialRead(
        id=number + 1,
        study_id=1,
        number=number,
        state=state,
        params=params,
        value=sum(losses) / len(losses) if losses else None,
        seeds=seeds,
        failure=TrialFailure(kind=failure, message="x") if failure else None,
    )


ADAM_W0 = {"optimizer": "adam", "lr": 1e-2, "warmup_steps": 0}
ADAM_W100 = {"optimizer": "adam", "lr": 1e-2, "warmup_steps": 100}
RADAM = {"optimizer": "radam", "lr": 1e-2, "warmup_steps": 0}
TRIALS = [
    _trial(0, ADAM_W0, [CHANCE, CHANCE, 1.0]),
    _trial(1, ADAM_W100, [0.5, 0.7, 0.6]),
    _trial(2, RADAM, [0.4, 0.5, 0.6]),
    _trial(3, RADAM, state=TrialState.FAILED, failure=FailureKind.ERROR),
    # Lost to a dead worker and re-run (trial 2's params): says nothing about the params.
    _trial(4, ADAM_W100, state=TrialState.FAILED, failure=FailureKind.LEASE_EXPIRED),
    _trial(5, ADAM_W100, state=TrialState.RUNNING),
]


def _judge(check: dict[str, Any], baseline: list[TrialRead] | None = None) -> CheckResult:
    gate = GateSpec.model_validate({"study": STUDY, "checks": [check]})
    return judge_trials(
        gate.checks[0], TRIALS, seeds_per_trial=3, chance=lambda _: CHANCE, baseline=baseline
    )


def test_failure_rates_count_failed_trials_and_skip_lost_ones() -> None:
    adam = _judge(
        {"type": "failures", "where": {"optimizer": "adam", "warmup_steps": 0}, "at_least": 0.6}
    )
    assert adam.passed and adam.measured == pytest.approx(2 / 3)
    # RAdam: 0 of 3 seeds diverged, plus a failed trial whose 3 seeds all count as failures.
    radam = _judge({"type": "failures", "where": {"optimizer": "radam"}, "at_most": 0.34})
    assert not radam.passed and radam.measured == pytest.approx(3 / 6)
    warm = _judge({"type": "failures", "where": ADAM_W100, "at_most": 0.0})
    assert warm.passed and "3 seeds" in warm.message  # neither the lost nor the running trial


def test_loss_against_a_bound_and_a_baseline() -> None:
    assert _judge({"type": "loss", "where": ADAM_W100, "at_most": 0.61}).passed
    assert not _judge({"type": "loss", "where": ADAM_W100, "at_most": 0.59}).passed
    baseline = [_trial(0, ADAM_W100, [0.5, 0.5, 0.5])]
    near = _judge({"type": "loss", "where": ADAM_W100, "within": 0.11}, baseline)
    far = _judge({"type": "loss", "where": ADAM_W100, "within": 0.09}, baseline)
    assert near.passed and not far.passed
    assert "+0.1000 from the baseline's 0.5000" in far.message
    missing = _judge({"type": "loss", "where": ADAM_W100, "within": 0.1})
    assert not missing.passed and "no --baseline" in missing.message


def test_a_where_that_matches_nothing_fails_the_check() -> None:
    result = _judge({"type": "loss", "where": {"optimizer": "sgd"}, "at_most": 9})
    assert not result.passed and "no finished trial" in result.message


def test_best_arm() -> None:
    assert _judge({"type": "best_arm", "in": ["radam"]}).measured == "radam"
    assert not _judge({"type": "best_arm", "in": ["adam", "sgd"]}).passed


@pytest.mark.parametrize(
    ("checks", "complaint"),
    [
        ([], "at least 1 item"),
        ([{"type": "failures", "where": {}}], "needs at_least, at_most or both"),
        ([{"type": "loss"}], "needs at_most, within"),
        ([{"type": "volume", "at_most": 1}], "does not match any of the expected tags"),
        (
            [{"type": "best_arm", "in": ["a"]}, {"type": "best_arm", "in": ["b"]}],
            "repeated: best_arm",
        ),
        ([{"type": "failures", "at_most": 1.5}], "less than or equal to 1"),
    ],
)
def test_invalid_gates_are_refused(checks: list[dict[str, Any]], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        GateSpec.model_validate({"study": STUDY, "checks": checks})


def test_check_names_default_to_type_and_settings() -> None:
    gate = GateSpec.model_validate(
        {"study": STUDY, "checks": [{"type": "loss", "where": {"lr": 0.01}, "at_most": 1}]}
    )
    assert check_name(gate.checks[0]) == "loss[lr=0.01]"


def test_junit_report_reads_back(tmp_path: Path) -> None:
    summary = GateSummary(
        gate="ci",
        study_id=7,
        passed=False,
        duration_s=1.5,
        checks=[
            CheckResult(name="ok", type="loss", passed=True, measured=0.5, message="fine"),
            CheckResult(name="bad", type="failures", passed=False, measured=1.0, message="3 of 3"),
        ],
    )
    path = tmp_path / "gate.xml"
    path.write_bytes(junit_xml(summary))
    suites = JUnitXml.fromfile(str(path))
    (suite,) = list(suites)
    assert suite.tests == 2 and suite.failures == 1
    cases = {case.name: case for case in suite}
    assert cases["ok"].is_passed
    (failure,) = cases["bad"].result
    assert isinstance(failure, Failure) and failure.message == "3 of 3"
