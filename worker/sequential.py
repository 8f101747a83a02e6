"""The sequential path: each seed of each trial its own model and optimizer, stepped one after
another (the path for models that cannot be stacked, for ``compile: true``, and ``HPS_STACK=0``).

The same interface as ``worker.stacked.StackedSeeds``: trials are indexed in the order given,
and a trial that ``leave``s stops training while the others go on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from api_schemas.trials import SeedResult, TrialAssignment
from worker.optimizers import build_optimizer
from worker.runs import batch_loss, evaluate, to_device, window_diverged
from worker.schedules import trial_schedule
from worker.workloads import Batch, Task


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


class SequentialSeeds:
    """Each seed of each trial its own model and optimizer, stepped one after another."""

    def __init__(self, task: Task, trials: Sequence[TrialAssignment], device: torch.device) -> None:
        self.task, self.device = task, device
        self.runs = [
            [_start_run(task, seed, trial, device) for seed in trial.seeds] for trial in trials
        ]
        self._training = set(range(len(trials)))

    def alive(self, trial: int) -> bool:
        """Whether any seed of ``trial`` still trains."""
        return trial in self._training and any(not run.diverged for run in self.runs[trial])

    def steps(self, trial: int) -> list[int]:
        """Steps each seed of ``trial`` has taken, in its assignment's order."""
        return [run.steps for run in self.runs[trial]]

    def train_step(self) -> None:
        for trial in sorted(self._training):
            for run in self.runs[trial]:
                if not run.diverged:
                    _train_step(run, self.device)

    def close_window(self, chance_loss: float) -> dict[int, float]:
        """Per trial still training, the mean over its seeds of each seed's mean training loss
        since the last report; a seed whose loss is non-finite or exploded stops as diverged,
        and it and seeds that diverged earlier count as chance. One host read for all."""
        trials = sorted(self._training)
        live = [run for t in trials for run in self.runs[t] if not run.diverged]
        means = torch.stack([run.loss_sum / run.window for run in live]).tolist() if live else []
        mean_of = dict(zip(map(id, live), means, strict=True))
        out = {}
        for t in trials:
            values = [chance_loss for run in self.runs[t] if run.diverged]
            for run in self.runs[t]:
                if run.diverged:
                    continue
                mean = mean_of[id(run)]
                run.diverged = window_diverged(mean, chance_loss)
                values.append(chance_loss if run.diverged else mean)
                run.loss_sum.zero_()
                run.window = 0
            out[t] = sum(values) / len(values)
        return out

    def leave(self, trial: int) -> None:
        """``trial`` stops training; its models stay as they are for ``results``."""
        self._training.discard(trial)

    def results(self, trial: int) -> list[SeedResult]:
        """Every seed of ``trial`` evaluated on its held-out batches, in its assignment's order."""
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
            for run in self.runs[trial]
        ]
