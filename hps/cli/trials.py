"""``hps trials STUDY``: every trial of a study, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
from typing import Annotated

import typer
from pydantic import TypeAdapter
from rich.table import Table

from api_schemas import TrialRead
from hps.cli.common import DEFAULT_URL, TokenOption, UrlOption, out
from hps.cli.common import connect as _connect
from hps.cli.common import fail as _fail

TRIALS = TypeAdapter(list[TrialRead])
COLUMNS = ("number", "state", "value", "attempt", "diverged_seeds", "failure", "worker_id")


def _row(trial: TrialRead) -> dict[str, object]:
    return {
        "number": trial.number,
        "state": trial.state.value,
        "value": trial.value,
        "attempt": trial.attempt,
        "diverged_seeds": sum(s.diverged for s in trial.seeds),
        "failure": f"{trial.failure.kind.value}: {trial.failure.message}" if trial.failure else "",
        "worker_id": trial.worker_id or "",
    }


def trials(
    study_id: Annotated[int, typer.Argument(help="The study's id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every field of every trial, as JSON (a baseline).")
    ] = False,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="One row per trial, params as columns.")
    ] = False,
) -> None:
    """List a study's trials: params, value, seeds that diverged, failures."""
    if as_json and as_csv:
        raise _fail("choose one of --json and --csv")
    with _connect(url, token) as client:
        rows = client.trials(study_id)
    if as_json:
        print(TRIALS.dump_json(rows, indent=2).decode())
        return
    params = sorted({name for trial in rows for name in trial.params})
    if as_csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, *params], lineterminator="\n")
        writer.writeheader()
        for trial in rows:
            writer.writerow(_row(trial) | trial.params)
        print(buffer.getvalue(), end="")
        return
    shown = (*COLUMNS[:5], *params)
    table = Table(title=f"study {study_id}: {len(rows)} trials")
    for column in shown:
        table.add_column(column)
    for trial in rows:
        cells = _row(trial) | trial.params
        value = cells["value"]
        cells["value"] = None if value is None else f"{value:.4f}"
        table.add_row(*("" if cells[c] is None else str(cells[c]) for c in shown))
    out.print(table)
