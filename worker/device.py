"""Which torch device a worker trains on."""

from __future__ import annotations

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
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: recorded with every trial."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
