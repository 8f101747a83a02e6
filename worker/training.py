"""Train one trial: the same parameters under R paired seeds, in lockstep.

Each seed gets its own model, optimizer, lr schedule and data stream, built from that seed
alone, so seed i is the same run in every trial whatever the other seeds are (bitwise on the CPU
for the same seed list; to float rounding otherwise, as the other seeds may change whether and
how it is stacked). At every step each
seed that is still training takes one optimizer step. Losses stay on the device and are read
back only at report steps, so a step never waits for the host.

The seeds train one by one or, when the workload's model qualifies, stacked as one model with
a leading model dimension (``worker.stacked``); either way each seed is its own run. Divergence
is a result, not a crash (``worker.runs`` has the rules). The exceptions below are for the
worker, not for the optimizer:

    Exception
    ├── TrialInterrupted   should_stop() said to stop (a signal, a lost lease)
    └── TrialTimeLimit     the trial ran past assignment.time_limit_s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from api_schemas.trials import SeedResult, TrialAssignment
from worker.optimizers import build_optimizer
from worker.runs import COLLAPSED, EXPLODED, batch_loss, evaluate, to_device, window_diverged
from worker.schedules import trial_schedule
from worker.stacked import StackedSeeds, Stacking, choose_path
from worker.workloads import Batch, Task, build_task

__all__ = [
    "COLLAPSED",
    "EXPLODED",
    "TrialInterrupted",
    "TrialOutcome",
    "TrialTimeLimit",
    "train_trial",
]

log = logging.getLogger("hps.worker")
DEFAULT_STACKING = Stacking()


class TrialInterrupted(Exception):
    """``should_stop()`` returned True; the trial did not finish."""


class TrialTimeLimit(Exception):
    """The trial ran longer than ``assignment.time_limit_s``."""


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial that was not interrupted ended."""

    state: Literal["completed", "pruned"]
    seeds: list[SeedResult]
    """One result per seed, in the assignment's order; every float is finite."""
    wall_time_s: float
    """From the call to the return, set-up and evaluation included."""
    steps_per_second: float
    """Optimizer steps summed over seeds / wall time of the training loop."""
    path: Literal["sequential", "stacked"] = "sequential"
    """How the seeds trained: one by one, or stacked as one model."""


@dataclass
class _SeedRun:
    """One seed's training state."""

    seed: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    batches: Iterator[Batch]
    loss_sum: torch.Tensor
    """Sum of training losses since the last report, kept on the device."""
    window: int = 0
    """Steps since the last report."""
    autocast: bool = False
    """Run forward passes under bf16 autocast (CUDA only)."""
    steps: int = 0
    diverged: bool = False


def _start_run(
    task: Task, seed: int, assignment: TrialAssignment, device: torch.device
) -> _SeedRun:
    model = task.build_model(seed).to(device)
    optimizer = build_optimizer(assignment.params, model.parameters())
    config = assignment.workload.config
    return _SeedRun(
        seed=seed,
        # The optimizer holds the parameters, which the compiled wrapper shares.
        model=cast(nn.Module, torch.compile(model)) if config.compile else model,
        optimizer=optimizer,
        scheduler=trial_schedule(optimizer, assignment.params, config.steps),
        batches=task.train_batches(seed),
        loss_sum=torch.zeros((), device=device),
        # bf16 autocast is a CUDA feature here; on the CPU it would only slow the run down.
        autocast=config.precision == "bf16" and device.type == "cuda",
    )


def _train_step(run: _SeedRun, device: torch.device) -> None:
    loss, _ = batch_loss(run.model, to_device(next(run.batches), device), autocast=run.autocast)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]  # (torch leaves it unannotated)
    run.optimizer.step()
    run.scheduler.step()
    run.loss_sum += loss.detach()
    run.window += 1
    run.steps += 1


class _Seeds(Protocol):
    """A trial's seeds training in lockstep: one by one, or stacked (``worker.stacked``)."""

    @property
    def alive(self) -> bool:
        """Whether any seed still trains."""
        ...

    def train_step(self) -> None:
        """Every seed that still trains takes one optimizer step."""

    def close_window(self, chance_loss: float) -> float:
        """Mean over seeds of each seed's mean training loss since the last report.

        Seeds whose loss is non-finite or exploded stop as diverged; those, and seeds that
        diverged earlier, count as the chance loss. One host read for all seeds.
        """
        ...

    def results(self) -> list[SeedResult]:
        """Every seed evaluated on its held-out batches, in the assignment's order."""
        ...

    @property
    def steps(self) -> list[int]:
        """Steps each seed has taken."""
        ...


class SequentialSeeds:
    """Each seed its own model and optimizer, stepped one after another."""

    def __init__(self, task: Task, assignment: TrialAssignment, device: torch.device) -> None:
        self.task, self.device = task, device
        self.runs = [_start_run(task, seed, assignment, device) for seed in assignment.seeds]

    @property
    def alive(self) -> bool:
        return any(not run.diverged for run in self.runs)

    @property
    def steps(self) -> list[int]:
        return [run.steps for run in self.runs]

    def train_step(self) -> None:
        for run in self.runs:
            if not run.diverged:
                _train_step(run, self.device)

    def close_window(self, chance_loss: float) -> float:
        live = [run for run in self.runs if not run.diverged]
        means = torch.stack([run.loss_sum / run.window for run in live]).tolist() if live else []
        values = [chance_loss] * (len(self.runs) - len(live))
        for run, mean in zip(live, means, strict=True):
            run.diverged = window_diverged(mean, chance_loss)
            values.append(chance_loss if run.diverged else mean)
            run.loss_sum.zero_()
            run.window = 0
        return sum(values) / len(values)

    def results(self) -> list[SeedResult]:
        return [
            evaluate(
                run.model,
                self.task,
                self.device,
                seed=run.seed,
                steps=run.steps,
                diverged=run.diverged,
                autocast=run.autocast,
            )
            for run in self.runs
        ]


def train_trial(
    assignment: TrialAssignment,
    *,
    device: torch.device,
    report: Callable[[int, float], bool],
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    stacking: Stacking = DEFAULT_STACKING,
) -> TrialOutcome:
    """Train every seed of ``assignment`` and evaluate each on its held-out batches.

    Every ``report_every`` steps and at the last step, calls ``report(step, value)`` with the
    mean over seeds of the training loss since the previous report (a diverged seed counts as
    the chance loss); a True answer prunes the trial: training stops and the seeds are evaluated
    as they stand. Training also stops early once every seed has diverged.

    The seeds train stacked as one model (``worker.stacked``) when ``stacking`` allows it and
    the workload's model qualifies, else one by one; the log says which and why. Both give
    each seed the same run, to float rounding.

    ``should_stop`` and ``clock`` are checked before every step. Raises TrialInterrupted when
    ``should_stop()`` is True and TrialTimeLimit past ``assignment.time_limit_s``; any other
    exception is a bug or a bad configuration. On the CPU, the same assignment gives
    bitwise-identical reports and results.
    """
    start = clock()
    config = assignment.workload.config
    task = build_task(assignment.workload)
    size, why = choose_path(task, assignment, device, stacking)
    log.info("trial %d: %s: %s", assignment.trial_id, "stacked" if size else "sequential", why)
    seeds: _Seeds
    if size is None:
        seeds = SequentialSeeds(task, assignment, device)
    else:
        autocast = config.precision == "bf16" and device.type == "cuda"
        seeds = StackedSeeds(task, assignment, device, size=size, autocast=autocast)

    state: Literal["completed", "pruned"] = "completed"
    train_start = clock()
    for step in range(1, config.steps + 1):
        if should_stop():
            raise TrialInterrupted(f"stopped before step {step} of {config.steps}")
        if clock() - start > assignment.time_limit_s:
            raise TrialTimeLimit(
                f"time limit of {assignment.time_limit_s:g} s reached at step {step}"
            )
        if not seeds.alive:
            break
        seeds.train_step()
        is_report_step = step % config.report_every == 0 or step == config.steps
        # The host read in close_window also waits for the device, so clock() is honest.
        if is_report_step and report(step, seeds.close_window(task.chance_loss)):
            state = "pruned"
            break
    train_time = clock() - train_start

    results = seeds.results()
    return TrialOutcome(
        state=state,
        seeds=results,
        wall_time_s=max(0.0, clock() - start),
        steps_per_second=sum(seeds.steps) / train_time if train_time > 0 else 0.0,
        path="stacked" if size else "sequential",
    )
