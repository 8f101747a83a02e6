"""``hps worker --gpus``: which devices, which child processes, and how they are supervised."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from hps.cli import app
from hps.workers_per_host import GpuSpecError, child_commands, parse_gpus


@pytest.mark.parametrize(
    ("spec", "visible", "expected"),
    [("all", 4, [0, 1, 2, 3]), ("0,2", 4, [0, 2]), ("3", 4, [3]), (" all ", 1, [0])],
)
def test_parse_gpus(spec: str, visible: int, expected: list[int]) -> None:
    assert parse_gpus(spec, visible) == expected


@pytest.mark.parametrize(
    ("spec", "visible", "complaint"),
    [
        ("all", 0, "no CUDA device"),
        ("0,x", 2, "'all' or indices"),
        ("1,1", 2, "twice"),
        ("0,2", 2, "no device 2 (torch sees 2 CUDA devices)"),
        ("-1", 2, "no device -1"),
    ],
)
def test_bad_gpu_specs_are_refused(spec: str, visible: int, complaint: str) -> None:
    with pytest.raises(GpuSpecError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        parse_gpus(spec, visible)


def test_each_child_sees_only_its_gpu_and_shares_the_cores() -> None:
    children = child_commands(["--url", "http://hps:8000"], [0, 3], threads=None)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in children] == ["0", "3"]
    for command, env in children:
        assert command[-4:-2] == ["--device", "cuda"] and command[-2] == "--threads"
        assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    explicit = child_commands([], [0], threads=5)
    assert explicit[0][0][-1] == "5"


def test_on_a_machine_without_gpus_the_worker_says_so() -> None:
    result = CliRunner().invoke(app, ["worker", "--gpus", "0"])
    assert result.exit_code == 2
    assert "no device 0" in result.output


SUPERVISE = """
import signal, sys
from hps.workers_per_host import supervise
child = [sys.executable, "-c",
         "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0));"
         "print('ready', flush=True); time.sleep(60)"]
print("codes", supervise([(child, {}), (child, {})]), flush=True)
"""


def test_sigterm_reaches_every_child_and_the_worst_code_wins() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE], stdout=subprocess.PIPE, text=True, cwd="."
    )
    assert parent.stdout is not None
    assert [parent.stdout.readline().strip() for _ in range(2)] == ["ready", "ready"]
    started = time.monotonic()
    parent.send_signal(signal.SIGTERM)
    assert parent.stdout.readline().strip() == "codes 0"  # both children exited cleanly
    assert parent.wait(timeout=30) == 0
    assert time.monotonic() - started < 30  # forwarded, not waited out (the children sleep 60 s)
