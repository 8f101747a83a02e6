"""The cross-fitted estimates of one workload, point and bootstrap, ready to be compared.

Every workload is resampled with the same bootstrap weights (the same seed ids), so that
estimates on different workloads and arms are paired and their differences have intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from api_schemas.analysis import Interval
from service.analysis import regret
from service.analysis.cells import W0, Floats, Outcomes

UNTUNED = ("untuned_linear", "untuned_exponential")


@dataclass(frozen=True)
class Quantity:
    """One number per arm: its point estimate (arms,) and bootstrap replicates (arms, B)."""

    point: Floats
    boot: Floats

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(self.point - other.point, self.boot - other.boot)

    def arm(self, index: int, seeds: int) -> Interval | None:
        return regret.interval(float(self.point[index]), self.boot[index], seeds)

    def between(self, index: int, other: Quantity, other_index: int, seeds: int) -> Interval | None:
        """The interval of this quantity of arm ``index`` minus ``other``'s of ``other_index``."""
        return regret.interval(
            float(self.point[index] - other.point[other_index]),
            self.boot[index] - other.boot[other_index],
            seeds,
        )


@dataclass(frozen=True)
class Estimates:
    """A workload's cross-fitted best losses: at w=0, over every warmup, and per untuned
    schedule; and the warmup regret (best at w=0 minus best overall)."""

    best_w0: Quantity
    best: Quantity
    untuned: dict[str, Quantity]

    @property
    def regret(self) -> Quantity:
        return self.best_w0 - self.best


@dataclass(frozen=True)
class Resampling:
    """The weights every workload of one analysis shares."""

    seeds: int
    point: regret.Weights
    boot: regret.Weights

    @classmethod
    def draw(cls, seeds: int, resamples: int, seed: int = 0) -> Resampling:
        rng = np.random.default_rng(seed)
        return cls(
            seeds, regret.point_weights(seeds, rng), regret.bootstrap_weights(seeds, resamples, rng)
        )


def estimate(outcomes: Outcomes, resampling: Resampling) -> Estimates | None:
    """Cross-fitted estimates of ``outcomes``; None without w=0 or without two seeds."""
    if outcomes.w0 is None or resampling.seeds < 2 or not outcomes.arms:
        return None
    warmups = np.asarray(outcomes.warmups)
    names = ["w0", "all", *(u for u in UNTUNED if u in outcomes.warmups)]
    masks = [warmups == W0, np.ones(len(warmups), dtype=bool)]
    masks += [warmups == name for name in names[2:]]
    point = regret.crossfit_best(outcomes.loss, masks, resampling.point)
    boot = regret.crossfit_best(outcomes.loss, masks, resampling.boot)
    best = {n: Quantity(p[:, 0], b) for n, p, b in zip(names, point, boot, strict=True)}
    return Estimates(
        best_w0=best["w0"],
        best=best["all"],
        untuned={name: best[name] for name in UNTUNED if name in best},
    )
