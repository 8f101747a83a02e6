"""Watching a study until it finishes: a live progress bar on a terminal, plain lines elsewhere.

On a terminal the bar shows trials done out of the budget, running and failed counts, the best
value so far and an ETA; in CI logs (not a TTY) a line is printed whenever one of those changes.
Ctrl-C stops the watching, never the study: ``StoppedWatching`` says which study goes on.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from api_schemas import StudyRead
from hps.client import Client


class StoppedWatching(Exception):
    """Ctrl-C while watching: the study is still running on the service."""

    def __init__(self, study_id: int) -> None:
        super().__init__(
            f"stopped watching; study {study_id} goes on (`hps status {study_id}` to look again)"
        )
        self.study_id = study_id


def _done(study: StudyRead) -> int:
    c = study.counts
    return c.completed + c.pruned + c.failed - c.retried


def _summary(study: StudyRead) -> str:
    c = study.counts
    best = "—" if study.best_trial is None else f"{study.best_trial.value:.4g}"
    return f"{c.running} running, {c.failed - c.retried} failed, best {best}"


def watch(client: Client, study_id: int, console: Console, poll_s: float = 2.0) -> StudyRead:
    """Poll ``study_id`` until it finishes and return it; raise StoppedWatching on Ctrl-C."""
    try:
        if console.is_terminal:
            return _bar(client, study_id, console, poll_s)
        return _lines(client, study_id, console, poll_s)
    except KeyboardInterrupt:
        raise StoppedWatching(study_id) from None


def _bar(client: Client, study_id: int, console: Console, poll_s: float) -> StudyRead:
    columns = (
        TextColumn(f"study {study_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=None)
        while True:
            study = client.study(study_id)
            progress.update(
                task, completed=_done(study), total=study.spec.n_trials, description=_summary(study)
            )
            if study.state.is_final():
                return study
            time.sleep(poll_s)


def _lines(client: Client, study_id: int, console: Console, poll_s: float) -> StudyRead:
    last = ""
    while True:
        study = client.study(study_id)
        line = f"study {study_id}: {_done(study)}/{study.spec.n_trials} done ({_summary(study)})"
        if line != last:
            console.print(line)
            last = line
        if study.state.is_final():
            return study
        time.sleep(poll_s)
