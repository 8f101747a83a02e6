"""CI gates: assertions on a study's results, judged into JUnit XML and a JSON summary.

A gate file holds a study spec and checks. Checks judge the study's final trials, never its
direction of the science: they catch a change to an optimizer, a schedule or a model that moves
frozen results (SCIENCE.md, "What a CI gate should check").

- ``failures``: the fraction of failed seeds (diverged, collapsed, or in a failed trial) among
  the trials whose params match ``where``, within ``at_least`` / ``at_most``;
- ``loss``: the mean final held-out loss over those seeds (failures count as the chance loss
  they are recorded with) ``at_most`` a bound, and/or ``within`` a margin of the same
  measurement on a baseline study;
- ``best_arm``: the best finished trial's ``param`` (default ``optimizer``) is one of ``in``;
- ``analysis``: the study's analysis produced its estimates with intervals and a verdict in
  ``verdict_in`` (when given).

Trials that failed for reasons that say nothing about the parameters (``interrupted``,
``lease_expired``) are left out: their parameters ran again.
"""

from __future__ import annotations

import math
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api_schemas import FailureKind, TrialRead, TrialState
from api_schemas.analysis import Analysis, Interval
from api_schemas.search_space import Scalar

NOT_ABOUT_PARAMS = (FailureKind.INTERRUPTED, FailureKind.LEASE_EXPIRED)


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)

    name: str | None = Field(default=None, max_length=200, description="default: from the check")


class FailuresCheck(_Check):
    """The failed fraction of seeds of the trials matching ``where``."""

    type: Literal["failures"]
    where: dict[str, Scalar] = Field(default_factory=dict)
    at_least: float | None = Field(default=None, ge=0, le=1)
    at_most: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _bounded(self) -> FailuresCheck:
        if self.at_least is None and self.at_most is None:
            raise ValueError("a failures check needs at_least, at_most or both")
        return self


class LossCheck(_Check):
    """The mean final loss over the seeds of the trials matching ``where``."""

    type: Literal["loss"]
    where: dict[str, Scalar] = Field(default_factory=dict)
    at_most: float | None = None
    within: float | None = Field(
        default=None, gt=0, description="allowed |loss - baseline loss| at the same settings"
    )

    @model_validator(mode="after")
    def _bounded(self) -> LossCheck:
        if self.at_most is None and self.within is None:
            raise ValueError("a loss check needs at_most, within (a baseline margin) or both")
        return self


class BestArmCheck(_Check):
    """The best trial's ``param`` is one of ``in``."""

    type: Literal["best_arm"]
    param: str = "optimizer"
    in_: list[Scalar] = Field(alias="in", min_length=1)


class AnalysisCheck(_Check):
    """The analysis has every estimate with an interval, and (optionally) an allowed verdict."""

    type: Literal["analysis"]
    verdict_in: list[str] | None = Field(default=None, min_length=1)


Check = Annotated[
    FailuresCheck | LossCheck | BestArmCheck | AnalysisCheck, Field(discriminator="type")
]


class GateSpec(BaseModel):
    """A gate file: the study to run and what its results must satisfy."""

    model_config = ConfigDict(extra="forbid")

    study: dict[str, Any] = Field(description="a study spec, as for `hps submit`")
    checks: list[Check] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> GateSpec:
        names = [check_name(check) for check in self.checks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"check names must be unique; repeated: {', '.join(repeated)}")
        return self


class CheckResult(BaseModel):
    name: str
    type: str
    passed: bool
    measured: float | str | None = None
    message: str


class GateSummary(BaseModel):
    """What ``--json`` writes: one result per check, and the overall outcome."""

    gate: str
    study_id: int
    passed: bool
    duration_s: float
    checks: list[CheckResult]


def check_name(check: Check) -> str:
    if check.name:
        return check.name
    where = getattr(check, "where", None)
    suffix = "" if not where else "[" + ",".join(f"{k}={v}" for k, v in where.items()) + "]"
    return f"{check.type}{suffix}"


def _matches(params: Mapping[str, Scalar], where: Mapping[str, Scalar]) -> bool:
    for key, wanted in where.items():
        value = params.get(key)
        if isinstance(wanted, float) or isinstance(value, float):
            if not isinstance(value, int | float) or isinstance(value, bool):
                return False
            if not math.isclose(float(value), float(wanted), rel_tol=1e-9):
                return False
        elif value != wanted:
            return False
    return True


def final_trials(trials: Sequence[TrialRead]) -> list[TrialRead]:
    """The finished trials whose outcome says something about their parameters."""
    return [
        t
        for t in trials
        if t.state.is_finished()
        and not (t.state == TrialState.FAILED and t.failure and t.failure.kind in NOT_ABOUT_PARAMS)
    ]


def seed_outcomes(
    trials: Sequence[TrialRead],
    where: Mapping[str, Scalar],
    seeds_per_trial: int,
    chance: Callable[[TrialRead], float],
) -> list[tuple[bool, float]]:
    """(failed, loss) per seed of the final trials matching ``where``; none is dropped.

    A failed trial (an error, its time limit) counts each of its seeds as failed at the chance
    loss of its workload.
    """
    outcomes: list[tuple[bool, float]] = []
    for trial in final_trials(trials):
        if not _matches(trial.params, where):
            continue
        if trial.state == TrialState.FAILED or not trial.seeds:
            outcomes += [(True, chance(trial))] * seeds_per_trial
        else:
            outcomes += [(seed.diverged, seed.loss) for seed in trial.seeds]
    return outcomes


def judge_trials(
    check: Check,
    trials: Sequence[TrialRead],
    *,
    seeds_per_trial: int,
    chance: Callable[[TrialRead], float],
    minimize: bool = True,
    baseline: Sequence[TrialRead] | None = None,
) -> CheckResult:
    """Judge one trial-based check (``failures``, ``loss`` or ``best_arm``)."""
    name = check_name(check)

    def result(passed: bool, measured: float | str | None, message: str) -> CheckResult:
        return CheckResult(
            name=name, type=check.type, passed=passed, measured=measured, message=message
        )

    if isinstance(check, BestArmCheck):
        done = [t for t in final_trials(trials) if t.value is not None]
        if not done:
            return result(False, None, "no trial finished with a value")
        best = (min if minimize else max)(done, key=lambda t: t.value or 0.0)
        arm = best.params.get(check.param)
        allowed = ", ".join(map(str, check.in_))
        return result(
            arm in check.in_,
            str(arm),
            f"best trial #{best.number} has {check.param}={arm} (allowed: {allowed})",
        )
    if isinstance(check, AnalysisCheck):
        raise TypeError("an analysis check is judged on the analysis, not on trials")

    outcomes = seed_outcomes(trials, check.where, seeds_per_trial, chance)
    if not outcomes:
        return result(False, None, f"no finished trial has params matching {check.where}")
    if isinstance(check, FailuresCheck):
        rate = sum(failed for failed, _ in outcomes) / len(outcomes)
        ok = (check.at_least is None or rate >= check.at_least) and (
            check.at_most is None or rate <= check.at_most
        )
        bounds = _bounds(check.at_least, check.at_most)
        return result(ok, rate, f"{rate:.0%} of {len(outcomes)} seeds failed (wanted {bounds})")

    loss = statistics.fmean(loss for _, loss in outcomes)
    problems = []
    if check.at_most is not None and loss > check.at_most:
        problems.append(f"above {check.at_most:g}")
    if check.within is not None:
        if baseline is None:
            problems.append("has a baseline margin but no --baseline was given")
        else:
            previous = seed_outcomes(baseline, check.where, seeds_per_trial, chance)
            if not previous:
                problems.append(f"the baseline has no trial matching {check.where}")
            else:
                reference = statistics.fmean(loss for _, loss in previous)
                if abs(loss - reference) > check.within:
                    problems.append(
                        f"moved {loss - reference:+.4f} from the baseline's {reference:.4f} "
                        f"(margin {check.within:g}); if intended, update the baseline"
                    )
    message = f"mean loss {loss:.4f} over {len(outcomes)} seeds"
    return result(
        not problems, loss, message + ("" if not problems else ": " + "; ".join(problems))
    )


def judge_analysis(check: AnalysisCheck, analysis: Analysis) -> CheckResult:
    """Every estimate the verdict rests on exists with an interval; the verdict is allowed."""
    name = check_name(check)
    verdict = analysis.verdict
    if verdict is None:
        reason = analysis.verdict_unavailable or "no verdict"
        return CheckResult(name=name, type=check.type, passed=False, message=reason)
    intervals: dict[str, Interval | None] = {
        "RAdam's regret": verdict.radam_regret,
        "Adam's regret": verdict.adam_regret,
        "RAdam's gap to tuned Adam": verdict.gap,
    }
    for workload in analysis.workloads:
        for arm in workload.arms:
            intervals[f"{workload.label}/{arm.arm} regret"] = arm.regret
        for pair in workload.pairs:
            intervals[f"{workload.label}/{pair.radam_arm} gap"] = pair.gap
    missing = [k for k, v in intervals.items() if v is None or not v.low <= v.estimate <= v.high]
    problems = [f"no interval for {', '.join(missing)}"] if missing else []
    if check.verdict_in is not None and verdict.outcome.value not in check.verdict_in:
        problems.append(f"verdict {verdict.outcome.value} is not one of {check.verdict_in}")
    message = f"verdict {verdict.outcome.value} (margin {verdict.margin:.3g})"
    return CheckResult(
        name=name,
        type=check.type,
        passed=not problems,
        measured=verdict.outcome.value,
        message=message + ("" if not problems else ": " + "; ".join(problems)),
    )


def _bounds(at_least: float | None, at_most: float | None) -> str:
    parts = []
    if at_least is not None:
        parts.append(f">= {at_least:.0%}")
    if at_most is not None:
        parts.append(f"<= {at_most:.0%}")
    return " and ".join(parts)


def junit_xml(summary: GateSummary) -> bytes:
    """The summary as a JUnit XML report: one test case per check."""
    failures = sum(not check.passed for check in summary.checks)
    suites = ET.Element("testsuites", tests=str(len(summary.checks)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"hps gate {summary.gate}",
        tests=str(len(summary.checks)),
        failures=str(failures),
        errors="0",
        time=f"{summary.duration_s:.3f}",
    )
    ET.SubElement(
        ET.SubElement(suite, "properties"), "property", name="study_id", value=str(summary.study_id)
    )
    for check in summary.checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"hps.gate.{check.type}", name=check.name, time="0"
        )
        if not check.passed:
            ET.SubElement(
                case, "failure", message=check.message, type=check.type
            ).text = check.message
        ET.SubElement(case, "system-out").text = f"measured: {check.measured}\n{check.message}"
    xml: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return xml
