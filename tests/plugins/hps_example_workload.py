"""A workload written outside hps, registered the way a third party would: by entry point.

Its distribution metadata sits beside it (``hps_example_workload-0.1.dist-info``), so putting
this directory on ``sys.path`` or ``PYTHONPATH`` installs it as far as ``importlib.metadata``
is concerned: exactly what ``pip install`` of a package with this in its pyproject.toml does:

    [project.entry-points."hps.workloads"]
    "example.parity" = "hps_example_workload:parity"
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from worker.workloads import Task, derive_seed
from worker.workloads.seeding import build_seeded

Batch = tuple[torch.Tensor, torch.Tensor]


def parity(config: dict[str, Any]) -> Task:
    """Is the number of ones in ``bits`` random bits odd? An MLP learns it for small ``bits``.

    ``norm: "batch"`` puts a BatchNorm (with running statistics) after the hidden layer: a
    model the worker cannot stack, so it trains its seeds one by one.
    """
    bits = int(config.get("bits", 6))
    if not 1 <= bits <= 20:
        raise ValueError(f"bits must be between 1 and 20, not {bits}")
    width = int(config.get("width", 64))
    batch_size = int(config["batch_size"])
    norm = str(config.get("norm", "none"))
    if norm not in ("none", "batch"):
        raise ValueError(f"norm must be 'none' or 'batch', not {norm!r}")

    def draw(generator: torch.Generator) -> Batch:
        x = torch.randint(2, (batch_size, bits), generator=generator)
        return x.float(), x.sum(dim=1) % 2

    def train(seed: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(derive_seed(seed, "train"))
        while True:
            yield draw(generator)

    def held_out(seed: int) -> list[Batch]:
        generator = torch.Generator().manual_seed(derive_seed(seed, "eval"))
        return [draw(generator) for _ in range(4)]

    def model(seed: int) -> nn.Module:
        return build_seeded(
            derive_seed(seed, "init"),
            lambda: nn.Sequential(
                nn.Linear(bits, width),
                nn.BatchNorm1d(width) if norm == "batch" else nn.Identity(),
                nn.ReLU(),
                nn.Linear(width, 2),
            ),
        )

    return Task(
        build_model=model,
        train_batches=train,
        eval_batches=held_out,
        chance_loss=math.log(2),
        chance_accuracy=0.5,
    )
