"""``hps submit``, ``hps status``, ``hps cancel``: a study from its spec to its result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from api_schemas import StudyRead
from hps.cli.common import DEFAULT_URL, TokenOption, UrlOption, connect, console, fail, out
from hps.client import Client
from hps.progress import StoppedWatching, watch


def load_spec(path: Path) -> dict[str, Any]:
    """The study spec in ``path`` (YAML or JSON); a message and exit code 2 if it is not one."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise fail(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise fail(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise fail(f"{path} must hold a mapping (a study spec), not {type(data).__name__}")
    return data


def submit(
    spec: Annotated[Path, typer.Argument(help="Study spec, YAML or JSON.", exists=False)],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the study finishes.")] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Resubmit under this key (from an earlier submit's error): returns the study "
            "that submit created instead of a second one. Default: a new key.",
        ),
    ] = None,
) -> None:
    """Submit a study; prints its id (and, with --wait, its result).

    The wait for the answer grows with the grid it queues; retries carry one idempotency key,
    so a slow or lost answer never makes a second study.
    """
    body = load_spec(spec)
    with connect(url, token) as client:
        study = client.submit(body, idempotency_key=idempotency_key)
        out.print(study.id)
        if wait:
            finish(client, study.id)


def status(
    study: Annotated[int, typer.Argument(help="Study id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show a study's state, trial counts and best trial."""
    with connect(url, token) as client:
        print_study(client.study(study))


def cancel(
    study: Annotated[int, typer.Argument(help="Study id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Stop a study: nothing more is leased, running trials stop at their next report."""
    with connect(url, token) as client:
        print_study(client.cancel(study))


def finish(client: Client, study_id: int, poll_s: float = 2.0) -> None:
    """Wait for the study to finish, showing progress; exit 1 if no trial completed.

    Ctrl-C stops the waiting, not the study (exit code 130, as for any interrupted command).
    """
    try:
        study = watch(client, study_id, console, poll_s)
    except StoppedWatching as stopped:
        console.print(str(stopped))
        raise typer.Exit(130) from None
    print_study(study)
    if study.counts.completed == 0:
        raise typer.Exit(1)


def print_study(study: StudyRead) -> None:
    """A study's trial counts as a table on stdout, and its best trial."""
    c = study.counts
    table = Table(title=f"study {study.id} · {study.name} · {study.state.value}")
    for column in ("completed", "pruned", "failed", "retried", "running", "waiting"):
        table.add_column(column, justify="right")
    table.add_row(
        *(
            str(getattr(c, k))
            for k in ("completed", "pruned", "failed", "retried", "running", "waiting")
        )
    )
    out.print(table)
    best = study.best_trial
    if best is not None:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        out.print(
            f"best trial #{best.number}: {study.spec.objective.metric} = "
            f"{best.value:.4f}  ({params})"
        )
