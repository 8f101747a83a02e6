"""Which torch device a worker trains on."""

from __future__ import annotations

import functools
import subprocess
from typing import Literal

import torch

DeviceChoice = Literal["auto", "cpu", "cuda"]


class DeviceUnavailable(Exception):
    pass


def choose_device(choice: DeviceChoice) -> torch.device:
    """``auto`` is CUDA when present (the first that ``CUDA_VISIBLE_DEVICES`` exposes), else CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if choice == "cuda":
        raise DeviceUnavailable("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device("cpu")


def describe(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3, sm_90, CUDA 12.8, driver 570.124.06)``.

    Recorded with every trial (at most 100 characters), so results from different GPUs,
    CUDA builds and drivers can be told apart.
    """
    if device.type != "cuda":
        return str(device)
    props = torch.cuda.get_device_properties(device)
    build = f"sm_{props.major}{props.minor}, CUDA {torch.version.cuda or '?'}"
    return f"{device} ({props.name}, {build}, driver {_driver()})"[:100]


@functools.cache
def _driver() -> str:
    """The NVIDIA driver version, from nvidia-smi (torch does not expose it); '?' without it."""
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    lines = found.stdout.split()
    return lines[0] if lines else "?"
