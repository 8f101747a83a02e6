"""``hps worker --gpus`` and ``--processes``: several worker processes on one host.

With ``--gpus`` each child is a plain ``hps worker --device cuda`` with ``CUDA_VISIBLE_DEVICES``
set to one GPU, so a trial never touches another worker's device and CUDA's device 0 is the right
one in every child. With ``--processes N`` each of N children is ``hps worker --device cpu``.
Either way each child gets its share of the cores as ``--threads``. The parent only supervises:
it forwards SIGTERM and SIGINT (so every child reports its trial as interrupted) and exits with
the worst of the children's exit codes.

``other_workers`` finds the other ``hps worker`` processes on this host, so that a worker
without ``--threads`` can say that it and they will fight over the cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
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


def cpu_child_commands(
    worker_args: Sequence[str], processes: int, threads: int | None
) -> list[tuple[list[str], dict[str, str]]]:
    """The command and environment of each of ``processes`` CPU worker processes."""
    per_child = threads or max(1, (os.cpu_count() or 1) // max(1, processes))
    command = [sys.executable, "-m", "hps", "worker", *worker_args, "--device", "cpu"]
    return [([*command, "--threads", str(per_child)], dict(os.environ)) for _ in range(processes)]


def is_training_worker(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is ``hps worker ...`` (or ``python -m hps worker``) that trains itself:
    not a ``--gpus`` / ``--processes`` parent, which only supervises."""
    for i in range(1, len(argv)):
        if argv[i] == "worker" and Path(argv[i - 1]).name == "hps":
            rest = argv[i + 1 :]
            return not any(a.split("=")[0] in ("--gpus", "--processes") for a in rest)
    return False


def other_workers(proc: Path = Path("/proc"), me: int | None = None) -> list[int]:
    """The pids of the other training ``hps worker`` processes this one can see (on Linux: the
    host, or the container's PID namespace); [] where there is no /proc."""
    me = os.getpid() if me is None else me
    found = []
    for entry in proc.glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        pid = int(entry.name)
        if pid != me and is_training_worker([a.decode(errors="replace") for a in argv if a]):
            found.append(pid)
    return sorted(found)


def oversubscription_warning(threads: int | None, others: Sequence[int]) -> str | None:
    """What a worker says when it runs without ``--threads`` next to other workers."""
    if threads or not others:
        return None
    pids = ", ".join(map(str, others[:5])) + (", ..." if len(others) > 5 else "")
    cores = os.cpu_count() or 1
    return (
        f"{len(others)} other hps worker(s) run on this host (pid {pids}) and this one has no "
        f"--threads: each uses all {cores} cores and they slow each other down. Give each "
        f"--threads {max(1, cores // (len(others) + 1))} (cores / workers), or start them "
        "together with `hps worker --processes N` (or `hps up`), which does."
    )


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
