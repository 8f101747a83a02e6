"""``hps worker --gpus``: one worker process per GPU, each seeing only its own device.

Each child is a plain ``hps worker --device cuda`` with ``CUDA_VISIBLE_DEVICES`` set to one GPU,
so a trial never touches another worker's device and CUDA's device 0 is the right one in every
child. The parent only supervises: it forwards SIGTERM and SIGINT (so every child reports its
trial as interrupted) and exits with the worst of the children's exit codes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType


class GpuSpecError(ValueError):
    """``--gpus`` is neither ``all`` nor a list of distinct device indices."""


def parse_gpus(spec: str, visible: int) -> list[int]:
    """``all`` -> every one of the ``visible`` devices; ``0,2`` -> [0, 2] (checked against it)."""
    if spec.strip() == "all":
        if visible == 0:
            raise GpuSpecError("--gpus all: torch sees no CUDA device on this machine")
        return list(range(visible))
    try:
        indices = [int(part) for part in spec.split(",")]
    except ValueError:
        raise GpuSpecError(f"--gpus must be 'all' or indices such as 0,1, not {spec!r}") from None
    if len(set(indices)) != len(indices):
        raise GpuSpecError(f"--gpus lists a device twice: {spec!r}")
    missing = [i for i in indices if not 0 <= i < visible]
    if missing:
        raise GpuSpecError(
            f"--gpus {spec}: no device {', '.join(map(str, missing))} "
            f"(torch sees {visible} CUDA device{'s' if visible != 1 else ''})"
        )
    return indices


def child_commands(
    worker_args: Sequence[str], gpus: Sequence[int], threads: int | None
) -> list[tuple[list[str], dict[str, str]]]:
    """The command and environment of each GPU's worker process."""
    per_child = threads or max(1, (os.cpu_count() or 1) // max(1, len(gpus)))
    # CUDA_VISIBLE_DEVICES names physical devices; keep the order nvidia-smi shows.
    base = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    command = [sys.executable, "-m", "hps", "worker", *worker_args, "--device", "cuda"]
    return [
        ([*command, "--threads", str(per_child)], {**base, "CUDA_VISIBLE_DEVICES": str(gpu)})
        for gpu in gpus
    ]


def supervise(children: list[tuple[list[str], dict[str, str]]]) -> int:
    """Run the children until all exit; forward SIGTERM/SIGINT; return the worst exit code."""
    processes = [subprocess.Popen(cmd, env=env) for cmd, env in children]

    def forward(signum: int, _: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [process.wait() for process in processes]
        # A child killed by a signal has a negative code; report it the shell's way, 128 + N.
        return max(128 - code if code < 0 else code for code in codes)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
