"""``hps gate GATE.yaml``: run a study and judge it, for CI (exit 0 pass, 1 fail, 2 error)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import TypeAdapter, ValidationError
from rich.table import Table

from api_schemas import StudySpec, StudyState, TrialRead
from api_schemas.analysis import Analysis
from api_schemas.studies import WORKLOAD_PARAM
from api_schemas.workloads import chance_loss
from hps.cli.common import DEFAULT_URL, TokenOption, UrlOption, console, out
from hps.cli.common import connect as _connect
from hps.cli.common import fail as _fail
from hps.client import Client
from hps.gate import (
    AnalysisCheck,
    CheckResult,
    GateSpec,
    GateSummary,
    judge_analysis,
    judge_trials,
    junit_xml,
)
from hps.local import LocalServiceError, local_service

TRIALS = TypeAdapter(list[TrialRead])


def _load(path: Path) -> GateSpec:
    try:
        return GateSpec.model_validate(yaml.safe_load(path.read_text()))
    except OSError as error:
        raise _fail(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise _fail(f"{path} is not valid YAML: {error}") from None
    except ValidationError as error:
        problems = "\n".join(
            f"  - {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )
        raise _fail(f"{path} is not a valid gate:\n{problems}") from None


def _baseline(path: Path | None) -> list[TrialRead] | None:
    if path is None:
        return None
    try:
        return TRIALS.validate_json(path.read_bytes())
    except OSError as error:
        raise _fail(f"cannot read the baseline {path}: {error.strerror}") from None
    except ValidationError as error:
        raise _fail(
            f"{path} is not a list of trials (`hps trials STUDY --json`): {error}"
        ) from None


Alive = Callable[[], None]
"""Raises when whatever trains the study is gone (a local service's workers); else returns."""


@contextlib.contextmanager
def _service(
    url: str, token: str | None, local: bool, workers: int
) -> Iterator[tuple[Client, Alive]]:
    if not local:
        with _connect(url, token) as client:
            yield client, lambda: None
        return
    try:
        with local_service(workers=workers) as svc, _connect(svc.url, svc.token) as client:
            console.print(f"local hps at {svc.url} with {workers} worker(s)")
            yield client, svc.check
    except LocalServiceError as error:
        raise _fail(str(error)) from None


def _wait(
    client: Client, study_id: int, timeout_s: float, alive: Alive, poll_s: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while not (study := client.study(study_id)).state.is_final():
        alive()
        c = study.counts
        done = c.completed + c.pruned + c.failed - c.retried
        line = f"study {study_id}: {done} done, {c.running} running, {c.waiting} waiting"
        if line != last:
            console.print(line)
            last = line
        if time.monotonic() > deadline:
            raise _fail(f"study {study_id} did not finish within --timeout {timeout_s:g} s")
        time.sleep(poll_s)
    if study.state == StudyState.CANCELLED:
        raise _fail(f"study {study_id} was cancelled before it finished: nothing to judge")


def judge(
    gate: GateSpec,
    spec: StudySpec,
    trials: list[TrialRead],
    analysis: Analysis | None,
    baseline: list[TrialRead] | None,
) -> list[CheckResult]:
    """Judge every check of ``gate`` on a finished study."""

    def chance(trial: TrialRead) -> float:
        known = chance_loss(spec.workload_for(trial.params.get(WORKLOAD_PARAM)))
        return known if known is not None else max((s.loss for s in trial.seeds), default=0.0)

    results = []
    for check in gate.checks:
        if isinstance(check, AnalysisCheck):
            assert analysis is not None
            results.append(judge_analysis(check, analysis))
        else:
            results.append(
                judge_trials(
                    check,
                    trials,
                    seeds_per_trial=spec.seeds_per_trial,
                    chance=chance,
                    minimize=spec.objective.direction == "minimize",
                    baseline=baseline,
                )
            )
    return results


def gate(
    gate_file: Annotated[Path, typer.Argument(help="The gate: a study spec and its checks.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="Start a service and workers on a temporary SQLite file."),
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Workers for --local.")] = 2,
    baseline: Annotated[
        Path | None,
        typer.Option(help="A baseline study's trials (`hps trials STUDY --json`) for `within`."),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON summary here.")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the study.")] = 3600,
) -> None:
    """Run a gate's study and check its results: exit 0 pass, 1 a check failed, 2 an error."""
    spec_file = _load(gate_file)
    previous = _baseline(baseline)
    start = time.monotonic()
    with _service(url, token, local, workers) as (client, alive):
        study = client.submit(spec_file.study)
        console.print(f"submitted study {study.id} ({study.name})")
        _wait(client, study.id, timeout, alive)
        trials = client.trials(study.id)
        needs_analysis = any(isinstance(c, AnalysisCheck) for c in spec_file.checks)
        analysis = client.analysis(study.id) if needs_analysis else None
    results = judge(spec_file, study.spec, trials, analysis, previous)
    summary = GateSummary(
        gate=gate_file.stem,
        study_id=study.id,
        passed=all(r.passed for r in results),
        duration_s=time.monotonic() - start,
        checks=results,
    )
    if junit:
        junit.write_bytes(junit_xml(summary))
    if json_out:
        json_out.write_text(summary.model_dump_json(indent=2))
    table = Table(title=f"gate {summary.gate} · study {study.id}")
    for column in ("check", "result", "measured", "details"):
        table.add_column(column)
    for r in results:
        mark = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        measured = f"{r.measured:.4g}" if isinstance(r.measured, float) else str(r.measured)
        table.add_row(r.name, mark, measured, r.message)
    out.print(table)
    if not summary.passed:
        raise typer.Exit(1)
