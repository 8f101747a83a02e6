"""Every loss estimand of one workload, with intervals (SCIENCE.md, "Measuring the need ...").

All of them are gaps between best cells (``bounds.gap``) on the outcome array. Arrays may carry
leading batch dimensions (many simulated studies at once): ``loss`` is (..., arms, lrs,
warmups, seeds) and every result has the batch's shape in front.

Per arm:
    regret    Δ = best over lr at w=0 - best over (lr, w)
    effect    per lr: loss at w=0 - best over w at that lr (the warmup-effect curve)
    placebo   Δ with only w=0 and a 1-step warmup: its truth is 0, a check on the estimator
Per (RAdam arm, its Adam arm):
    gap       Γ = RAdam's best over lr at w=0 - Adam's best over (lr, w)
    untuned   Ma & Yarats: RAdam's best at w=0 - Adam's best with each untuned warmup, and the
              same per lr
    failures  per lr: RAdam's failure rate at w=0 - Adam's at that lr's best warmup; and at the
              verdict's cells (each arm's best), a paired difference over the seeds
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from service.analysis.bounds import Difference, Gap, failure_difference, gap
from service.analysis.cells import W0, Arm, Bools, Floats, Outcomes

RADAMS = ("radam", "radam_reference")
ADAMS = ("adam", "adamw")
UNTUNED = ("untuned_linear", "untuned_exponential")
Cell = TypeVar("Cell", np.float64, np.bool_)
PLACEBO = "1"
"""The warmup label of a 1-step linear warmup: no warmup in all but name."""


def pairs(arms: list[Arm]) -> list[tuple[int, int]]:
    """(RAdam arm, Adam arm) for every RAdam arm: the Adam arm with the same other settings
    (e.g. beta2), or else the first Adam arm."""
    adams = [i for i, a in enumerate(arms) if a.optimizer in ADAMS]
    if not adams:
        return []
    out = []
    for r, arm in enumerate(arms):
        if arm.optimizer in RADAMS:
            same = [i for i in adams if arms[i].settings == arm.settings]
            out.append((r, (same or adams)[0]))
    return out


@dataclass(frozen=True)
class PairEstimates:
    """One (RAdam, Adam) pair: batch shape (...,) unless said otherwise."""

    radam: int
    adam: int
    gap: Gap
    untuned: dict[str, Gap]
    untuned_by_lr: dict[str, Gap]
    """(..., lrs)"""
    failures_by_lr: Difference
    """(..., lrs): RAdam at w=0 against Adam at that lr's best warmup."""
    adam_warmup_by_lr: np.ndarray
    """(..., lrs): the index of that warmup."""
    failures_at_best: Difference
    """RAdam's best cell at w=0 against Adam's best cell."""


@dataclass(frozen=True)
class Estimates:
    """A workload's estimands (see the module doc)."""

    regret: Gap
    """(..., arms)"""
    effect: Gap
    """(..., arms, lrs)"""
    placebo: Gap | None
    """(..., arms), when the design has a 1-step warmup"""
    pairs: list[PairEstimates]


def _cells(loss: npt.NDArray[Cell]) -> npt.NDArray[Cell]:
    """(..., lrs, warmups, seeds) -> (..., cells, seeds)."""
    return loss.reshape(*loss.shape[:-3], -1, loss.shape[-1])


def _mean(loss: Floats) -> Floats:
    """Mean over seeds, +inf where a cell was not run (so that argmin never picks it)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(loss).any(axis=-1), np.inf, loss.mean(axis=-1))


def _take(values: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """``values`` at ``index`` along ``axis`` (index has values' shape without that axis)."""
    return np.take_along_axis(values, np.expand_dims(index, axis), axis=axis).squeeze(axis)


def _pair(
    loss: Floats, failed: Bools, warmups: list[str], w0: int, r: int, a: int
) -> PairEstimates:
    radam, adam = loss[..., r, :, :, :], loss[..., a, :, :, :]  # (..., lrs, warmups, seeds)
    radam_w0 = radam[..., :, w0, :]
    untuned, by_lr = {}, {}
    for name in UNTUNED:
        if name in warmups:
            u = warmups.index(name)
            untuned[name] = gap(radam_w0, adam[..., :, u, :])
            by_lr[name] = gap(radam_w0[..., :, None, :], adam[..., :, u, None, :])
    f_radam, f_adam = failed[..., r, :, :, :], failed[..., a, :, :, :]
    adam_best_w = _mean(adam).argmin(axis=-1)  # (..., lrs)
    f_adam_at = _take(f_adam, adam_best_w[..., None], axis=-2)  # (..., lrs, seeds)
    radam_best_lr = _mean(radam_w0).argmin(axis=-1)  # (...,)
    adam_best_cell = _mean(_cells(adam)).argmin(axis=-1)
    f_radam_best = _take(f_radam[..., :, w0, :], radam_best_lr[..., None], axis=-2)
    f_adam_best = _take(_cells(f_adam), adam_best_cell[..., None], axis=-2)
    return PairEstimates(
        radam=r,
        adam=a,
        gap=gap(radam_w0, _cells(adam)),
        untuned=untuned,
        untuned_by_lr=by_lr,
        failures_by_lr=failure_difference(f_radam[..., :, w0, :], f_adam_at),
        adam_warmup_by_lr=adam_best_w,
        failures_at_best=failure_difference(f_radam_best, f_adam_best),
    )


def estimate_arrays(
    loss: Floats, failed: Bools, arms: list[Arm], warmups: list[str]
) -> Estimates | None:
    """The estimands of outcome arrays; None without w=0 or without two seeds."""
    if W0 not in warmups or loss.shape[-1] < 2 or not arms:
        return None
    w0 = warmups.index(W0)
    regret = gap(loss[..., :, w0, :], _cells(loss))
    effect = gap(loss[..., :, :, w0, None, :], loss)
    placebo = None
    if PLACEBO in warmups:
        keep = [w0, warmups.index(PLACEBO)]
        placebo = gap(loss[..., :, w0, :], _cells(loss[..., :, :, keep, :]))
    return Estimates(
        regret=regret,
        effect=effect,
        placebo=placebo,
        pairs=[_pair(loss, failed, warmups, w0, r, a) for r, a in pairs(arms)],
    )


def estimate(outcomes: Outcomes) -> Estimates | None:
    """The estimands of one workload's outcomes; None without w=0 or without two seeds."""
    return estimate_arrays(outcomes.loss, outcomes.failed, outcomes.arms, outcomes.warmups)
