"""Learning-rate schedules, applied on top of the optimizer's peak ``lr``."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def linear_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int) -> LambdaLR:
    """Ramp the learning rate linearly from ``lr/W`` to ``lr`` over ``W`` steps, then hold it.

    Optimizer step ``t`` (1-based) runs at ``lr * min(1, t/W)``; ``W = 0`` means no warmup.
    Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, not {warmup_steps}")

    # LambdaLR applies λ(0) before the first step, so λ(t) = (t+1)/W: with t/W the first
    # optimizer step would be wasted at lr 0.
    def factor(t: int) -> float:
        return 1.0 if warmup_steps == 0 else min(1.0, (t + 1) / warmup_steps)

    return LambdaLR(optimizer, factor)
