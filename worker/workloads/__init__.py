"""Workloads: the model and data a trial trains, built from a workload spec and a seed.

A workload is a function from its config to a ``Task``; a task builds, for one seed, the initial
model and the training and held-out batches. Everything it returns is on the CPU; the trainer
moves it. The built-in workloads are in ``BUILTIN``. Anyone can add one without touching hps:

    # in the plugin's pyproject.toml
    [project.entry-points."hps.workloads"]
    "mypkg.tiny_lm" = "mypkg.workloads:tiny_lm"

where ``tiny_lm(config: dict) -> worker.workloads.Task`` receives the workload's config as a
dict (the training fields ``batch_size``, ``steps``, ``report_every``, ``precision`` and whatever
else the study spec put there) and raises ``ValueError`` for a config it refuses. Plugin names
carry a dot so they can never shadow, or be mistaken for, a built-in one.

A seed is split into independent streams (initial weights, training data, held-out data) by
hashing, so held-out batches never come from a training stream and seed i is the same run in
every trial (paired seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from torch import nn

from api_schemas.workloads import (
    DigitsMLPConfig,
    DigitsTransformerConfig,
    PluginWorkload,
    SortTaskConfig,
    Workload,
)
from worker.workloads import digits, sort_task
from worker.workloads.seeding import build_seeded, derive_seed
from worker.workloads.sort_task import Batch
from worker.workloads.transformer import build_sort_transformer

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Batch",
    "Task",
    "UnknownWorkload",
    "build_task",
    "derive_seed",
    "registered",
]

ENTRY_POINT_GROUP = "hps.workloads"


class UnknownWorkload(LookupError):
    """The spec names a plugin workload that no installed package registers on this worker."""


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


def _digits(build_model: Callable[[], nn.Module], config: Any) -> Task:
    return Task(
        build_model=lambda seed: build_seeded(derive_seed(seed, "init"), build_model),
        train_batches=lambda seed: digits.train_batches(config, derive_seed(seed, "train")),
        eval_batches=lambda seed: digits.eval_batches(config, derive_seed(seed, "eval")),
        chance_loss=math.log(digits.CLASSES),
        chance_accuracy=1.0 / digits.CLASSES,
    )


def _digits_transformer(config: DigitsTransformerConfig) -> Task:
    return _digits(lambda: digits.DigitsTransformerModel(config), config)


def _digits_mlp(config: DigitsMLPConfig) -> Task:
    return _digits(lambda: digits.DigitsMLPModel(config), config)


BUILTIN: dict[str, Callable[[Any], Task]] = {
    "postln_transformer": _sort_transformer(norm_first=False),
    "preln_transformer": _sort_transformer(norm_first=True),
    "digits_transformer": _digits_transformer,
    "digits_mlp": _digits_mlp,
}
"""Built-in workload name -> builder of its ``Task`` from the workload's config model."""


def _plugins() -> dict[str, EntryPoint]:
    # Looked up on each call, not cached: a long-lived worker sees packages installed later.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def registered() -> list[str]:
    """Every workload this worker can run: the built-in ones, then the installed plugins."""
    return [*BUILTIN, *sorted(set(_plugins()) - set(BUILTIN))]


def build_task(workload: Workload) -> Task:
    """The ``Task`` for a validated workload spec.

    Raises UnknownWorkload for a plugin that is not installed here, and whatever the plugin
    raises for a config it refuses (both fail the trial, not the worker).
    """
    if not isinstance(workload, PluginWorkload):
        return BUILTIN[workload.name](workload.config)
    plugin = _plugins().get(workload.name)
    if plugin is None:
        raise UnknownWorkload(
            f"no workload {workload.name!r} on this worker: install the package that registers "
            f"it in the {ENTRY_POINT_GROUP!r} entry-point group (this worker has: "
            f"{', '.join(registered())})"
        )
    task = plugin.load()(workload.config.model_dump())
    if not isinstance(task, Task):
        raise TypeError(
            f"workload {workload.name!r} ({plugin.value}) returned {type(task).__name__}, "
            "not a worker.workloads.Task"
        )
    return task
