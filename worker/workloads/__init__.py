"""Workloads: the model and data a trial trains, built from a workload spec and a seed.

``WORKLOADS`` maps each name in ``api_schemas.workloads.WORKLOAD_NAMES`` to a function that turns
the workload's config into a ``Task``. A task builds, for one seed, the initial model and the
training and held-out batches. Everything it returns is on the CPU; the trainer moves it.

A seed is split into independent streams (initial weights, training data, held-out data) by
hashing, so held-out batches never come from a training stream and seed i is the same run in
every trial (paired seeds).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn

from api_schemas.workloads import SortTaskConfig, Workload
from worker.workloads import sort_task
from worker.workloads.sort_task import Batch
from worker.workloads.transformer import build_sort_transformer

__all__ = ["WORKLOADS", "Batch", "Task", "build_task", "derive_seed"]


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit generator seed for one named stream of ``seed``, the same on every machine."""
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Task:
    """A workload made concrete: per-seed model and data, and what knowing nothing scores.

    The model maps inputs to logits whose last dimension is the class; targets index the
    classes, so the loss is ``cross_entropy(logits.flatten(0, -2), targets.flatten())``.
    """

    build_model: Callable[[int], nn.Module]
    """seed -> the model with its initial weights (the same for a seed in every trial)."""
    train_batches: Callable[[int], Iterator[Batch]]
    """seed -> an endless stream of training batches (the same order in every trial)."""
    eval_batches: Callable[[int], list[Batch]]
    """seed -> the held-out batches, from a stream no training batch is drawn from."""
    chance_loss: float
    """Cross-entropy of the uniform prediction, ln(classes): the clip for a failed run."""
    chance_accuracy: float
    """1 / classes: the accuracy recorded for a diverged run."""


def _sort_transformer(norm_first: bool) -> Callable[[SortTaskConfig], Task]:
    def build(config: SortTaskConfig) -> Task:
        return Task(
            build_model=lambda seed: build_sort_transformer(
                config, norm_first=norm_first, init_seed=derive_seed(seed, "init")
            ),
            train_batches=lambda seed: sort_task.train_batches(config, derive_seed(seed, "train")),
            eval_batches=lambda seed: sort_task.eval_batches(config, derive_seed(seed, "eval")),
            chance_loss=math.log(config.vocab),
            chance_accuracy=1.0 / config.vocab,
        )

    return build


WORKLOADS: dict[str, Callable[[SortTaskConfig], Task]] = {
    "postln_transformer": _sort_transformer(norm_first=False),
    "preln_transformer": _sort_transformer(norm_first=True),
}
"""Workload name -> builder of its ``Task`` from the workload's config."""


def build_task(workload: Workload) -> Task:
    """The ``Task`` for a validated workload spec."""
    return WORKLOADS[workload.name](workload.config)
