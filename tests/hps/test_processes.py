"""``hps worker --processes N``: N CPU workers sharing the cores; and the warning a worker
without ``--threads`` logs when another worker runs on the same host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hps.cli import app
from hps.workers_per_host import (
    cpu_child_commands,
    is_training_worker,
    other_workers,
    oversubscription_warning,
)


def test_each_cpu_child_gets_its_share_of_the_cores() -> None:
    children = cpu_child_commands(["--url", "http://hps:8000", "--burst"], 3, threads=None)
    assert len(children) == 3
    share = str(max(1, (os.cpu_count() or 1) // 3))
    for command, env in children:
        assert command[1:4] == ["-m", "hps", "worker"]
        assert command[-4:] == ["--device", "cpu", "--threads", share]
        assert "--burst" in command
        assert env["PATH"] == os.environ["PATH"]
    assert cpu_child_commands([], 2, threads=7)[1][0][-1] == "7"


@pytest.mark.parametrize(
    ("argv", "trains"),
    [
        (["/venv/bin/python", "/venv/bin/hps", "worker", "--url", "u"], True),
        (["python", "-m", "hps", "worker", "--threads", "1"], True),
        (["python", "-m", "hps", "worker", "--gpus", "all"], False),  # only supervises
        (["python", "-m", "hps", "worker", "--processes=2"], False),
        (["python", "-m", "hps", "serve"], False),
        (["python", "worker"], False),
        ([], False),
    ],
)
def test_which_processes_are_training_workers(argv: list[str], trains: bool) -> None:
    assert is_training_worker(argv) is trains


def test_other_workers_are_found_in_proc_but_not_this_one(tmp_path: Path) -> None:
    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    process(10, "python", "-m", "hps", "worker")
    process(11, "python", "-m", "hps", "worker", "--processes", "2")
    process(12, "python", "-m", "hps", "worker", "--threads", "1")
    process(13, "bash")
    (tmp_path / "self").mkdir()
    assert other_workers(tmp_path, me=10) == [12]
    assert other_workers(tmp_path, me=99) == [10, 12]


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="no /proc (not Linux)")
def test_a_real_worker_process_on_this_host_is_found() -> None:
    # A stand-in with a worker's command line: `python -c ... hps worker`.
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "hps", "worker"]
    )
    try:
        deadline = time.monotonic() + 10
        while sleeper.pid not in other_workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleeper.pid in other_workers()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_warning_says_what_to_do_and_only_when_it_applies() -> None:
    assert oversubscription_warning(None, []) is None
    assert oversubscription_warning(2, [123]) is None  # --threads given: it knows its share
    warning = oversubscription_warning(None, [123])
    assert warning is not None
    assert "1 other hps worker(s) run on this host (pid 123)" in warning
    assert "--threads" in warning and "--processes" in warning


@pytest.mark.parametrize(
    "args",
    [["--processes", "2", "--device", "cuda"], ["--processes", "2", "--gpus", "all"]],
)
def test_processes_are_cpu_workers(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["worker", *args])
    assert result.exit_code == 2
    assert "--processes starts CPU workers" in result.output


def test_processes_must_be_positive() -> None:
    result = CliRunner().invoke(app, ["worker", "--processes", "0"])
    assert result.exit_code == 2
