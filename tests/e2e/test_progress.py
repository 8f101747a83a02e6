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


AT_A_TERMINAL = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from hps.cli import app; sys.argv[0] = 'hps'; app()"
)
"""``python -m hps`` with SIGINT as a terminal gives it, whatever the test run inherited."""


def test_a_child_started_with_sigint_ignored_still_gets_ctrl_c_as_at_a_terminal() -> None:
    """The trap this test file fell into: it must fail without AT_A_TERMINAL's handler."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    ignoring = "import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    for child, expected in ((probe, "False"), (AT_A_TERMINAL.split("from")[0] + probe, "True")):
        # A parent that ignores SIGINT, as a background job of a non-interactive shell does.
        parent = ignoring + f"subprocess.run([sys.executable, '-c', {child!r}])"
        out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True)
        assert out.stdout.strip() == expected, out


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
    # No worker: the study cannot finish while we wait on it. The command runs as it does at a
    # terminal, where Ctrl-C is a KeyboardInterrupt: a test run started in the background of a
    # shell without job control (`make test &`, a CI runner) has SIGINT ignored, its children
    # inherit that, and Python then installs no handler, so the Ctrl-C below would do nothing.
    # That, not uvloop, is why this test "hung" in clean-clone runs.
    command = [sys.executable, "-c", AT_A_TERMINAL, "submit", str(spec_file), "--wait"]
    waiting = subprocess.Popen(
        [*command, "--url", service.url],
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
