"""When a trial may be pruned: never inside its own warmup, explicit or implicit.

A loss inside a warmup says little about where the run is going: the learning rate is still
ramping up, or (RAdam) the update is still being rectified. Pruners compare trials step by
step, so a trial with a longer warmup would look worse early and be cut for it: exactly the
bias a warmup study must not have. ``protected_until`` is the first step at which a report may
lead to a prune; it reads only the trial's parameters (no database, no Optuna).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from api_schemas.params import PARAMS
from api_schemas.search_space import Scalar

UNTUNED_EXPONENTIAL_FACTOR = 3.0
"""``1 - exp(-(1 - beta2) t)`` reaches 0.95 at ``t = 3 / (1 - beta2)`` (exp(-3) = 0.0498)."""
RECTIFIED_FACTOR = 2.0
"""RAdam's rectification term approaches 1 over about ``2 / (1 - beta2)`` steps: its implicit
warmup, the same length as Ma & Yarats' untuned linear warmup (their equivalence result)."""
RECTIFIED = frozenset({"radam", "radam_reference"})


def _steps(factor: float, beta2: float) -> int:
    # Rounded half up like worker.schedules.untuned_warmup_steps: 2 / (1 - 0.999) is 1999.99...
    return max(1, math.floor(factor / (1.0 - beta2) + 0.5))


def protected_until(params: Mapping[str, Scalar]) -> int:
    """The first step at which ``params``' trial may be pruned: the longest of its warmups.

    - ``linear`` schedule (the default when ``warmup_steps`` is given): ``warmup_steps``;
    - ``adam_warmup_reference`` warms up inside the optimizer: its ``warmup_steps``;
    - ``untuned_linear``: ``2 / (1 - beta2)``;
    - ``untuned_exponential``: ``3 / (1 - beta2)``, where its factor reaches ~0.95;
    - ``radam`` and ``radam_reference``: ``2 / (1 - beta2)``, their implicit warmup.
    """
    optimizer = params.get("optimizer")
    schedule = params.get("warmup_schedule", PARAMS["warmup_schedule"].default)
    warmup_steps = int(params.get("warmup_steps", 0) or 0)
    beta2 = float(params.get("beta2", PARAMS["beta2"].default))  # type: ignore[arg-type]
    until = 0
    if schedule == "linear" or optimizer == "adam_warmup_reference":
        until = max(until, warmup_steps)
    if schedule == "untuned_linear":
        until = max(until, _steps(2.0, beta2))
    if schedule == "untuned_exponential":
        until = max(until, _steps(UNTUNED_EXPONENTIAL_FACTOR, beta2))
    if optimizer in RECTIFIED:
        until = max(until, _steps(RECTIFIED_FACTOR, beta2))
    return until


def may_prune(params: Mapping[str, Scalar], step: int) -> bool:
    """Whether a report at ``step`` may prune the trial (it is past every warmup)."""
    return step >= protected_until(params)
