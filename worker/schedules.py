"""Learning-rate schedules: a warmup, then a decay, as a factor on the optimizer's peak ``lr``.

The factor for optimizer step ``s`` (1-based) is ``warmup(s) * decay(s)``. ``LambdaLR`` calls
its function with the number of steps taken so far, ``s - 1``, and applies the result *before*
step ``s``; writing the factors in ``s`` keeps step 1 from being wasted at lr 0.

Warmups (``api_schemas.params.WARMUP_SCHEDULES``), with ``W`` their length:

- ``none``: 1; W = 0.
- ``linear``: ``min(1, s / W)`` with W = ``warmup_steps``; W = 0 is ``none``.
- ``untuned_linear`` (Ma & Yarats): ``min(1, s / W)`` with W = ``round(2 / (1 - beta2))``,
  rounding half up (2/(1 - 0.999) is 1999.99...8 in floats, and means 2000).
- ``untuned_exponential`` (Ma & Yarats): ``1 - exp(-(1 - beta2) * s)``, never exactly 1; for
  where the decay starts it counts as W = ``round(2 / (1 - beta2))``, like ``untuned_linear``.

Decays (``api_schemas.params.LR_DECAYS``) run from ``D`` (the warmup's W unless told
otherwise; 0 with ``lr_decay_start: start``, so that every warmup runs under the same decay)
to ``T = total_steps``, with progress ``x = (s - D - 1) / (T - D)`` clipped to [0, 1]:

- ``constant``: 1;
- ``linear``: ``1 - x``;
- ``cosine``: ``(1 + cos(pi * x)) / 2``.

So steps up to ``D + 1`` run at the full factor, and the factor would reach 0 at step ``T + 1``,
just past the end: the last step runs at ``1/(T - D)`` of the peak (linear), not at 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import cast

import torch
from torch.optim.lr_scheduler import LambdaLR

from api_schemas.params import LR_DECAYS, PARAMS, WARMUP_SCHEDULES
from api_schemas.search_space import Scalar

Factor = Callable[[int], float]
"""Step ``s`` (1-based) -> multiplier of the peak lr."""


def untuned_warmup_steps(beta2: float) -> int:
    """Ma & Yarats' rule-of-thumb warmup length ``2 / (1 - beta2)``, rounded half up."""
    return max(1, math.floor(2 / (1 - beta2) + 0.5))


def warmup_length(schedule: str, warmup_steps: int, beta2: float) -> int:
    """The step at which ``schedule`` ends its warmup (where the decay starts)."""
    if schedule == "none":
        return 0
    if schedule == "linear":
        return warmup_steps
    return untuned_warmup_steps(beta2)


def _warmup(schedule: str, warmup_steps: int, beta2: float) -> Factor:
    length = warmup_length(schedule, warmup_steps, beta2)
    if schedule == "none" or length == 0:
        return lambda s: 1.0
    if schedule in ("linear", "untuned_linear"):
        return lambda s: min(1.0, s / length)
    return lambda s: -math.expm1(-(1 - beta2) * s)  # 1 - exp(-(1 - β2)s), exact for tiny (1 - β2)s


def _decay(decay: str, start: int, total_steps: int) -> Factor:
    span = total_steps - start

    def progress(s: int) -> float:
        return min(1.0, max(0.0, (s - start - 1) / span)) if span > 0 else 0.0

    if decay == "constant":
        return lambda s: 1.0
    if decay == "linear":
        return lambda s: 1.0 - progress(s)
    return lambda s: 0.5 * (1.0 + math.cos(math.pi * progress(s)))


def schedule_factor(
    *,
    schedule: str,
    warmup_steps: int,
    beta2: float,
    total_steps: int,
    decay: str,
    decay_start: int | None = None,
) -> Factor:
    """The lr multiplier for optimizer step ``s`` (1-based); see the module docstring.

    ``decay_start`` defaults to the warmup's length; the trainer sets it for an optimizer that
    warms up by itself. Raises ValueError for an unknown name or a negative length.
    """
    if schedule not in WARMUP_SCHEDULES:
        known = ", ".join(WARMUP_SCHEDULES)
        raise ValueError(f"unknown warmup_schedule {schedule!r}; choose from {known}")
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown lr_decay {decay!r}; choose from {', '.join(LR_DECAYS)}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, not {warmup_steps}")
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), not {beta2}")
    warm = _warmup(schedule, warmup_steps, beta2)
    start = warmup_length(schedule, warmup_steps, beta2) if decay_start is None else decay_start
    cool = _decay(decay, start, total_steps)
    return lambda s: warm(s) * cool(s)


def build_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    warmup_steps: int,
    beta2: float,
    total_steps: int,
    decay: str,
    decay_start: int | None = None,
) -> LambdaLR:
    """A ``LambdaLR`` running optimizer step ``s`` at ``lr * schedule_factor(...)(s)``.

    Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    factor = schedule_factor(
        schedule=schedule,
        warmup_steps=warmup_steps,
        beta2=beta2,
        total_steps=total_steps,
        decay=decay,
        decay_start=decay_start,
    )
    return LambdaLR(optimizer, lambda taken: factor(taken + 1))


SELF_WARMING: frozenset[str] = frozenset({"adam_warmup_reference"})
"""Optimizers that warm up by themselves over ``warmup_steps``: the schedule must not too."""


def trial_factor(params: Mapping[str, Scalar], total_steps: int) -> Factor:
    """The lr multiplier a trial's parameters ask for, per step ``s`` (1-based).

    Reads ``warmup_schedule``, ``warmup_steps``, ``beta2``, ``lr_decay`` and ``lr_decay_start``
    (PARAMS defaults when absent; ``beta2`` sizes the untuned warmups even for SGD). For an
    optimizer in SELF_WARMING the warmup is left to the optimizer, whose ramp would otherwise
    be multiplied by a second one, and ``warmup_schedule`` is ignored; a decay still starts
    after ``warmup_steps`` (at step 1 with ``lr_decay_start: start``). The sequential trainer
    applies it through ``trial_schedule``, the stacked one reads it per model.
    """

    def get(name: str) -> Scalar:
        value = params.get(name)
        return cast(Scalar, PARAMS[name].default) if value is None else value

    schedule, warmup_steps = str(get("warmup_schedule")), int(get("warmup_steps"))
    decay_start = None
    if params.get("optimizer") in SELF_WARMING:
        schedule, decay_start = "none", warmup_steps
    if get("lr_decay_start") == "start":
        decay_start = 0
    return schedule_factor(
        schedule=schedule,
        warmup_steps=warmup_steps,
        beta2=float(get("beta2")),
        total_steps=total_steps,
        decay=str(get("lr_decay")),
        decay_start=decay_start,
    )


def trial_schedule(
    optimizer: torch.optim.Optimizer, params: Mapping[str, Scalar], total_steps: int
) -> LambdaLR:
    """A ``LambdaLR`` running step ``s`` at ``lr * trial_factor(params, total_steps)(s)``."""
    factor = trial_factor(params, total_steps)
    return LambdaLR(optimizer, lambda taken: factor(taken + 1))
