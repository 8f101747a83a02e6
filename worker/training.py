"""Train trials: the same parameters under R paired seeds each, every seed in lockstep.

Each seed gets its own model, optimizer, lr schedule and data stream, built from that seed
and its trial's parameters alone, so seed i is the same run in every trial whatever the other
seeds are, and whatever other trials train beside it (bitwise on the CPU for the same seed
lists; to float rounding otherwise, as the others may change whether and how it is stacked).
At every step each seed that is still training takes one optimizer step. Losses stay on the
device and are read back only at report steps, so a step never waits for the host.

The trials of one batch (one workload) train together: one by one (``worker.sequential``) or,
when the workload's model qualifies, stacked as one model with a leading model dimension
(``worker.stacked``); either way each seed is its own run, and each trial has its own reports,
prune decision, lease and end. Divergence is a result, not a crash (``worker.runs`` has the
rules). The exceptions below are for the worker, not for the optimizer:

    Exception
    ├── TrialInterrupted   should_stop() said to stop (a signal, a lost lease)
    └── TrialTimeLimit     the trial ran past assignment.time_limit_s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from api_schemas.trials import SeedResult, TrialAssignment
from worker.runs import COLLAPSED, EXPLODED
from worker.sequential import SequentialSeeds
from worker.stacked import StackedSeeds, Stacking, choose_path
from worker.workloads import build_task

__all__ = [
    "COLLAPSED",
    "EXPLODED",
    "ReportMany",
    "Trained",
    "TrialInterrupted",
    "TrialOutcome",
    "TrialRun",
    "TrialTimeLimit",
    "train_trial",
    "train_trials",
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
    """This trial's optimizer steps summed over seeds / wall time of the training loop (trials
    trained together share that time)."""
    path: Literal["sequential", "stacked"] = "sequential"
    """How the seeds trained: one by one, or stacked as one model."""


@dataclass(frozen=True)
class TrialRun:
    """One trial of a batch, and how the trainer talks to its lease."""

    assignment: TrialAssignment
    report: Callable[[int, float], bool]
    """``report(step, value)``: True prunes the trial. An exception it raises (a lost lease)
    ends this trial alone, and is its end."""
    should_stop: Callable[[], bool] = lambda: False
    """Checked before every step: True interrupts this trial alone (a refused heartbeat)."""


ReportMany = Callable[[int, Sequence[tuple[TrialRun, float]]], list[bool | Exception]]
"""``report_many(step, [(run, value), ...])``: the values of several trials at one step in one
call; per run, in order, what its own ``report`` would give: True to prune it, False to train
on, or the exception that ends it."""


@dataclass(frozen=True)
class Trained:
    """What ``train_trials`` returns."""

    ends: list[TrialOutcome | Exception]
    """Each trial's end, in the order given: its outcome, or the exception that ended it."""
    capacity: int | None
    """Models one stack of this workload holds on this device; None when it cannot stack."""


class _Runs(Protocol):
    """The seeds of a batch's trials training in lockstep: one by one, or stacked."""

    def alive(self, trial: int) -> bool:
        """Whether any seed of ``trial`` still trains."""
        ...

    def train_step(self) -> None:
        """Every seed of every trial still training takes one optimizer step."""

    def close_window(self, chance_loss: float) -> dict[int, float]:
        """Per trial still training, the mean over its seeds of each seed's mean training loss
        since the last report. Seeds whose loss is non-finite or exploded stop as diverged;
        those, and seeds that diverged earlier, count as the chance loss."""
        ...

    def leave(self, trial: int) -> None:
        """``trial`` stops training (pruned, ended, lost); the others go on unchanged."""

    def results(self, trial: int) -> list[SeedResult]:
        """Every seed of ``trial`` evaluated on its held-out batches, in its assignment's order."""
        ...

    def steps(self, trial: int) -> list[int]:
        """Steps each seed of ``trial`` has taken."""
        ...


def train_trials(
    runs: Sequence[TrialRun],
    *,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    stacking: Stacking = DEFAULT_STACKING,
    report_many: ReportMany | None = None,
) -> Trained:
    """Train the seeds of every trial in ``runs`` (one workload) together, and evaluate each.

    For each trial, every ``report_every`` steps and at the last step, calls its
    ``report(step, value)`` with the mean over its seeds of the training loss since the
    previous report (a diverged seed counts as the chance loss); a True answer prunes that
    trial: its seeds stop training and are evaluated as they stand, the others train on. A
    trial also stops once every seed of it has diverged. With ``report_many``, the trials still
    training report each step together through it instead (one request for the stack), and
    each answer is taken as its own ``report``'s would be.

    The seeds train stacked as one model (``worker.stacked``) when ``stacking`` allows it and
    the workload's model qualifies, else one by one; the log says which and why. Both give
    each seed the same run, to float rounding, whatever other trials train beside it.

    ``should_stop`` (every trial) and each trial's own ``should_stop`` and time limit are
    checked before every step: they end it with TrialInterrupted or TrialTimeLimit. An
    exception in training ends every trial still training with it; one in a trial's report or
    evaluation ends that trial. On the CPU, the same trials give bitwise-identical reports and
    results.
    """
    start = clock()
    trials = [run.assignment for run in runs]
    workload = trials[0].workload
    if any(trial.workload != workload for trial in trials):
        raise ValueError("trials trained together must share one workload")
    config = workload.config
    task = build_task(workload)
    path = choose_path(task, trials, device, stacking)
    names = ", ".join(str(trial.trial_id) for trial in trials)
    kind: Literal["sequential", "stacked"] = "sequential" if path.size is None else "stacked"
    log.info("trial%s %s: %s: %s", "s" if len(trials) > 1 else "", names, kind, path.why)
    seeds: _Runs
    if path.size is None:
        seeds = SequentialSeeds(task, trials, device)
    else:
        autocast = config.precision == "bf16" and device.type == "cuda"
        seeds = StackedSeeds(task, trials, device, size=path.size, autocast=autocast)

    ends: dict[int, Exception | Literal["completed", "pruned"]] = {}

    def end(trial: int, how: Exception | Literal["completed", "pruned"]) -> None:
        ends[trial] = how
        seeds.leave(trial)

    def training() -> list[int]:
        return [t for t in range(len(runs)) if t not in ends]

    train_start = clock()
    try:
        for step in range(1, config.steps + 1):
            if should_stop():
                for t in training():
                    end(t, TrialInterrupted(f"stopped before step {step} of {config.steps}"))
                break
            for t in training():
                if runs[t].should_stop():
                    end(t, TrialInterrupted(f"stopped before step {step} of {config.steps}"))
                elif clock() - start > trials[t].time_limit_s:
                    limit = trials[t].time_limit_s
                    end(t, TrialTimeLimit(f"time limit of {limit:g} s reached at step {step}"))
                elif not seeds.alive(t):
                    end(t, "completed")
            if not training():
                break
            seeds.train_step()
            if step % config.report_every == 0 or step == config.steps:
                # The host read in close_window also waits for the device, so clock() is honest.
                values = seeds.close_window(task.chance_loss)
                reporting = training()
                answers = (
                    report_many(step, [(runs[t], values[t]) for t in reporting])
                    if report_many is not None and len(reporting) > 1
                    else [_report(runs[t], step, values[t]) for t in reporting]
                )
                for t, answer in zip(reporting, answers, strict=True):
                    if isinstance(answer, Exception):
                        end(t, answer)
                    elif answer:
                        end(t, "pruned")
    except Exception as error:  # the batch's training step failed: every trial in it did
        for t in training():
            ends[t] = error
    train_time = clock() - train_start

    outcomes: list[TrialOutcome | Exception] = []
    for t in range(len(runs)):
        how = ends.get(t, "completed")
        if isinstance(how, Exception):
            outcomes.append(how)
            continue
        try:
            results = seeds.results(t)
        except Exception as error:
            outcomes.append(error)
            continue
        outcomes.append(
            TrialOutcome(
                state=how,
                seeds=results,
                wall_time_s=max(0.0, clock() - start),
                steps_per_second=sum(seeds.steps(t)) / train_time if train_time > 0 else 0.0,
                path=kind,
            )
        )
    return Trained(outcomes, path.capacity)


def _report(run: TrialRun, step: int, value: float) -> bool | Exception:
    """``run.report``'s answer, or the exception it raised (which ends that trial alone)."""
    try:
        return run.report(step, value)
    except Exception as error:
        return error


def train_trial(
    assignment: TrialAssignment,
    *,
    device: torch.device,
    report: Callable[[int, float], bool],
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    stacking: Stacking = DEFAULT_STACKING,
) -> TrialOutcome:
    """Train one trial (``train_trials`` with a batch of one); its end is returned or raised.

    Raises TrialInterrupted when ``should_stop()`` is True, TrialTimeLimit past
    ``assignment.time_limit_s``, and whatever ``report`` or the workload raised.
    """
    trained = train_trials(
        [TrialRun(assignment, report)],
        device=device,
        should_stop=should_stop,
        clock=clock,
        stacking=stacking,
    )
    (end,) = trained.ends
    if isinstance(end, Exception):
        raise end
    return end
