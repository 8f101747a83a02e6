"""Train one trial: the same parameters under R paired seeds, in lockstep.

Each seed gets its own model, optimizer, lr schedule and data stream, built from that seed
alone, so seed i is the same run in every trial whatever the other seeds are. At every step each
seed that is still training takes one optimizer step. Losses stay on the device and are read
back only at report steps, so a step never waits for the host.

Divergence is a result, not a crash: a seed whose loss becomes non-finite or explodes stops
training and is recorded as ``diverged`` with the chance loss; so is a seed whose held-out loss
ends at chance (a collapse). The exceptions below are for the worker, not for the optimizer:

    Exception
    ├── TrialInterrupted   should_stop() said to stop (a signal, a lost lease)
    └── TrialTimeLimit     the trial ran past assignment.time_limit_s
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from api_schemas.trials import SeedResult, TrialAssignment
from worker.optimizers import build_optimizer
from worker.schedules import trial_schedule
from worker.workloads import Batch, Task, build_task

EXPLODED = 10.0
"""A training loss above EXPLODED times the chance loss is diverged: it will not come back."""
COLLAPSED = 0.9
"""A held-out loss at or above COLLAPSED times the chance loss is a collapse: nothing learned.

Measured on the 6-layer Post-LN sort task: Adam at lr 1e-2 without warmup ends at 0.95-1.0 x
chance, while a model that ignores its input and learns only which tokens each sorted position
tends to hold already reaches 0.71 x chance; 0.9 separates the two.
"""


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


def _to_device(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _loss(run: _SeedRun, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of a batch, and the logits flattened to (tokens, classes)."""
    x, y = batch
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.autocast):
        logits = run.model(x).flatten(0, -2)
    # The loss is taken in fp32 whatever the forward pass ran in.
    return F.cross_entropy(logits.float(), y.flatten()), logits


def _train_step(run: _SeedRun, device: torch.device) -> None:
    loss, _ = _loss(run, _to_device(next(run.batches), device))
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]  # (torch leaves it unannotated)
    run.optimizer.step()
    run.scheduler.step()
    run.loss_sum += loss.detach()
    run.window += 1
    run.steps += 1


def _close_window(runs: list[_SeedRun], chance_loss: float) -> float:
    """Mean over seeds of each seed's mean training loss since the last report.

    Marks seeds whose loss is non-finite or exploded as diverged; those, and seeds that
    diverged earlier, count as the chance loss. One host read for all seeds.
    """
    live = [run for run in runs if not run.diverged]
    means = torch.stack([run.loss_sum / run.window for run in live]).tolist() if live else []
    values = [chance_loss] * (len(runs) - len(live))
    for run, mean in zip(live, means, strict=True):
        if not math.isfinite(mean) or mean > EXPLODED * chance_loss:
            run.diverged = True
        values.append(chance_loss if run.diverged else mean)
        run.loss_sum.zero_()
        run.window = 0
    return sum(values) / len(values)


def _evaluate(run: _SeedRun, task: Task, device: torch.device) -> SeedResult:
    """Held-out loss and per-token accuracy, with failures recorded as chance."""
    failed = SeedResult(
        seed=run.seed,
        loss=task.chance_loss,
        accuracy=task.chance_accuracy,
        diverged=True,
        steps=run.steps,
    )
    if run.diverged:
        return failed
    run.model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    n_tokens = 0
    with torch.no_grad():
        for batch in task.eval_batches(run.seed):
            inputs, targets = _to_device(batch, device)
            loss, logits = _loss(run, (inputs, targets))
            targets = targets.flatten()
            loss_sum += loss * targets.numel()
            correct += (logits.argmax(dim=-1) == targets).sum()
            n_tokens += targets.numel()
    total_loss, total_correct = torch.stack([loss_sum, correct]).tolist()
    loss_value = total_loss / n_tokens
    if not math.isfinite(loss_value) or loss_value >= COLLAPSED * task.chance_loss:
        return failed
    return SeedResult(
        seed=run.seed,
        loss=min(loss_value, task.chance_loss),
        accuracy=total_correct / n_tokens,
        diverged=False,
        steps=run.steps,
    )


def train_trial(
    assignment: TrialAssignment,
    *,
    device: torch.device,
    report: Callable[[int, float], bool],
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> TrialOutcome:
    """Train every seed of ``assignment`` and evaluate each on its held-out batches.

    Every ``report_every`` steps and at the last step, calls ``report(step, value)`` with the
    mean over seeds of the training loss since the previous report (a diverged seed counts as
    the chance loss); a True answer prunes the trial: training stops and the seeds are evaluated
    as they stand. Training also stops early once every seed has diverged.

    ``should_stop`` and ``clock`` are checked before every step. Raises TrialInterrupted when
    ``should_stop()`` is True and TrialTimeLimit past ``assignment.time_limit_s``; any other
    exception is a bug or a bad configuration. On the CPU, the same assignment gives
    bitwise-identical reports and results.
    """
    start = clock()
    config = assignment.workload.config
    task = build_task(assignment.workload)
    runs = [_start_run(task, seed, assignment, device) for seed in assignment.seeds]

    state: Literal["completed", "pruned"] = "completed"
    train_start = clock()
    for step in range(1, config.steps + 1):
        if should_stop():
            raise TrialInterrupted(f"stopped before step {step} of {config.steps}")
        if clock() - start > assignment.time_limit_s:
            raise TrialTimeLimit(
                f"time limit of {assignment.time_limit_s:g} s reached at step {step}"
            )
        alive = [run for run in runs if not run.diverged]
        if not alive:
            break
        for run in alive:
            _train_step(run, device)
        is_report_step = step % config.report_every == 0 or step == config.steps
        # The host read in _close_window also waits for the device, so clock() is honest.
        if is_report_step and report(step, _close_window(runs, task.chance_loss)):
            state = "pruned"
            break
    train_time = clock() - train_start

    seeds = [_evaluate(run, task, device) for run in runs]
    total_steps = sum(run.steps for run in runs)
    return TrialOutcome(
        state=state,
        seeds=seeds,
        wall_time_s=max(0.0, clock() - start),
        steps_per_second=total_steps / train_time if train_time > 0 else 0.0,
    )
