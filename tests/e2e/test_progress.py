"""Watching a study: a progress bar on a terminal, lines in a log, Ctrl-C leaves the study alone."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from api_schemas import StudyState
from hps.progress import watch
from tests.e2e.conftest import TINY_WORKLOAD, Service

pytestmark = pytest.mark.e2e

SPEC = {
    "name": "progress",
    "workload": TINY_WORKLOAD,
    "n_trials": 2,
    "seeds_per_trial": 1,
    "sampler": {"type": "random", "seed": 1},
    "search_space": {
        "optimizer": {"type": "fixed", "value": "adam"},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
}


def test_a_terminal_gets_a_progress_bar(service: Service) -> None:
    with service.client() as client:
        study = client.submit(SPEC)
        service.start_worker("--burst")
        screen = io.StringIO()
        console = Console(file=screen, force_terminal=True, width=120)
        finished = watch(client, study.id, console, poll_s=0.2)
    assert finished.state == StudyState.FINISHED
    shown = screen.getvalue()
    assert f"study {study.id}" in shown and "2/2" in shown and "best" in shown
    assert "\x1b[" in shown  # drawn with terminal control sequences, not printed as lines


def test_ctrl_c_stops_waiting_not_the_study(service: Service, tmp_path: Path) -> None:
    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    # No worker: the study cannot finish while we wait on it.
    waiting = subprocess.Popen(
        [sys.executable, "-m", "hps", "submit", str(spec_file), "--url", service.url, "--wait"],
        env={**service.cli_env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ctrl-C once it is waiting (its first progress line), not while it submits: on a loaded
    # machine a fixed pause may end before the command has its answer.
    lines: list[str] = []
    watching = threading.Event()

    def read() -> None:
        assert waiting.stderr is not None
        for line in waiting.stderr:
            lines.append(line)
            if " done (" in line:
                watching.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert watching.wait(timeout=60), "".join(lines)
        waiting.send_signal(signal.SIGINT)
        try:
            waiting.wait(timeout=30)
        except subprocess.TimeoutExpired:
            waiting.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack
            waiting.wait(timeout=10)
            reader.join(timeout=10)
            pytest.fail("still running 30 s after Ctrl-C:\n" + "".join(lines))
    finally:
        waiting.kill()
    reader.join(timeout=10)
    stderr = "".join(lines)
    with service.client() as client:
        (study,) = client.studies()
    assert waiting.returncode == 130, stderr
    assert f"study {study.id} goes on" in stderr
    assert study.state == StudyState.RUNNING  # still there for workers to take
