"""hps's own versions of the RAdam authors' optimizer and of the article's ``AdamWarmup``.

Both follow the printed code (SCIENCE.md, "The algorithms, exactly") step for step, fixed to run
on current torch, and keep its choices where they differ from ``torch.optim``:

- eps is added to ``sqrt(v)`` before the bias correction, which is folded into the step size:
  the update is ``step_size * m / (sqrt(v) + eps)`` with ``step_size ∝ sqrt(1 - β2^t)/(1 - β1^t)``
  (torch's RAdam does the same; torch's Adam/AdamW divide by ``sqrt(v̂) + eps`` instead);
- weight decay is decoupled, ``p -= wd * lr * p``, and applied only on steps that are taken;
- every parameter keeps its own step count ``t`` (parameters without a gradient do not advance).

The arithmetic runs in the parameter's dtype (the printed code casts to float32 for fp16 models).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

RECTIFY_FROM = 5.0
"""The reference repo rectifies when ``N_sma >= 5`` (torch: ``rho_t > 5``; the paper: ``> 4``)."""


@dataclass
class _Bucket:
    """The parameters of one group that are at the same step ``t``, for ``torch._foreach_*``."""

    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    exp_avgs: list[Tensor] = field(default_factory=list)
    exp_avg_sqs: list[Tensor] = field(default_factory=list)


def _check_hyperparameters(lr: float, betas: tuple[float, float], eps: float, wd: float) -> None:
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    if not wd >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {wd}")


class _AdamMoments(Optimizer):
    """Adam's moment estimates; a subclass says what one step at ``t`` does to its bucket."""

    def _apply(self, group: dict[str, Any], t: int, bucket: _Bucket) -> None:
        raise NotImplementedError

    def _advance(self, group: dict[str, Any]) -> dict[int, _Bucket]:
        """Advance every parameter with a gradient by one step and update its moments.

        Returns the parameters grouped by their new step count.
        """
        beta1, beta2 = group["betas"]
        buckets: dict[int, _Bucket] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            bucket = buckets.setdefault(state["step"], _Bucket())
            bucket.params.append(p)
            bucket.grads.append(p.grad)
            bucket.exp_avgs.append(state["exp_avg"])
            bucket.exp_avg_sqs.append(state["exp_avg_sq"])
        for bucket in buckets.values():
            # v = β2·v + (1-β2)·g²;  m = β1·m + (1-β1)·g
            torch._foreach_mul_(bucket.exp_avg_sqs, beta2)
            torch._foreach_addcmul_(bucket.exp_avg_sqs, bucket.grads, bucket.grads, value=1 - beta2)
            torch._foreach_mul_(bucket.exp_avgs, beta1)
            torch._foreach_add_(bucket.exp_avgs, bucket.grads, alpha=1 - beta1)
        return buckets

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one optimization step; ``closure`` re-evaluates the loss, as in torch."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for t, bucket in self._advance(group).items():
                self._apply(group, t, bucket)
        return loss


def _adam_update(bucket: _Bucket, eps: float, step_size: float) -> None:
    """``p -= step_size * m / (sqrt(v) + eps)``."""
    denom = torch._foreach_sqrt(bucket.exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(bucket.params, bucket.exp_avgs, denom, -step_size)


def _decay_weights(bucket: _Bucket, weight_decay: float, lr: float) -> None:
    """Decoupled weight decay, ``p -= wd * lr * p``."""
    if weight_decay != 0:
        torch._foreach_mul_(bucket.params, 1 - weight_decay * lr)


@lru_cache(maxsize=4096)
def radam_step_size(t: int, beta1: float, beta2: float) -> tuple[bool, float]:
    """Whether step ``t`` is rectified, and its step size per unit lr (the repo's ``step_size``).

    Rectified (``N_sma >= 5``): ``r_t * sqrt(1 - β2^t) / (1 - β1^t)``, to multiply
    ``m / (sqrt(v) + eps)``. Otherwise ``1 / (1 - β1^t)``, to multiply ``m`` (momentum SGD).
    Cached, as the repo caches them (it keeps the last 10 steps in a buffer).
    """
    beta2_t = beta2**t
    n_sma_max = 2 / (1 - beta2) - 1
    # Written as the repo and torch write it, so the threshold compares the same float.
    n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
    bias_correction1 = 1 - beta1**t
    if n_sma >= RECTIFY_FROM:
        rect = (n_sma - 4) * (n_sma - 2) * n_sma_max / ((n_sma_max - 4) * (n_sma_max - 2) * n_sma)
        return True, math.sqrt(rect * (1 - beta2_t)) / bias_correction1
    return False, 1 / bias_correction1


class RAdamReference(_AdamMoments):
    """RAdam as in the authors' repository (LiyuanLucasLiu/RAdam) and the article.

    Rectified Adam once ``N_sma >= 5``: from step 6 when β2 >= 0.8398 (every usual choice),
    later for smaller β2, never for β2 <= 2/3. Before that, with
    ``degenerated_to_sgd=True`` a momentum-SGD step ``p -= lr * m / (1 - β1^t)``; with ``False``
    (the repo's default) no step at all: the moments and ``t`` advance, the parameter and its
    weight decay do not.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        degenerated_to_sgd: bool = False,
    ) -> None:
        _check_hyperparameters(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            degenerated_to_sgd=degenerated_to_sgd,
        )
        super().__init__(params, defaults)

    def _apply(self, group: dict[str, Any], t: int, bucket: _Bucket) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        rectified, step_size = radam_step_size(t, beta1, beta2)
        if not rectified and not group["degenerated_to_sgd"]:
            return
        _decay_weights(bucket, group["weight_decay"], lr)
        if rectified:
            _adam_update(bucket, group["eps"], step_size * lr)
        else:
            torch._foreach_add_(bucket.params, bucket.exp_avgs, alpha=-step_size * lr)


class AdamWarmupReference(_AdamMoments):
    """The article's ``AdamWarmup``: bias-corrected Adam with a linear warmup inside.

    Step ``t`` runs at ``scheduled_lr = 1e-8 + t * lr / warmup`` while ``t < warmup``, then at
    ``lr``; ``warmup = 0`` is plain Adam with decoupled weight decay (the printed code tests
    ``warmup > t`` first, so it never divides by zero). The update is
    ``p -= wd * scheduled_lr * p`` and ``p -= scheduled_lr * sqrt(1 - β2^t)/(1 - β1^t) *
    m / (sqrt(v) + eps)``: AdamW with ``eps / sqrt(1 - β2^t)`` in place of ``eps``.

    The printed code read ``super(AdamW, self)`` and removed ``add_``/``addcmul_`` overloads; this
    class runs on current torch. ``lr`` may be scheduled from outside as well (the scheduled
    ``lr`` is read every step); the trainer then must not warm up a second time.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup: int = 0,
    ) -> None:
        _check_hyperparameters(lr, betas, eps, weight_decay)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"Invalid warmup: {warmup!r} (a whole number of steps >= 0)")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup=warmup)
        super().__init__(params, defaults)

    def _apply(self, group: dict[str, Any], t: int, bucket: _Bucket) -> None:
        beta1, beta2 = group["betas"]
        lr, warmup = group["lr"], group["warmup"]
        scheduled_lr = 1e-8 + t * lr / warmup if warmup > t else lr
        step_size = scheduled_lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        _decay_weights(bucket, group["weight_decay"], scheduled_lr)
        _adam_update(bucket, group["eps"], step_size)


def radam_step_sizes(t: int, beta1: Tensor, beta2: Tensor) -> tuple[Tensor, Tensor]:
    """``radam_step_size`` for many models at once: per-model ``beta1``, ``beta2`` (float64).

    Returns (rectified, step size per unit lr), the same floats as the scalar version, with the
    branch taken per model by ``torch.where`` instead of in Python.
    """
    beta2_t = beta2**t
    n_sma_max = 2 / (1 - beta2) - 1
    n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
    bias_correction1 = 1 - beta1**t
    rectified = n_sma >= RECTIFY_FROM
    rect = (n_sma - 4) * (n_sma - 2) * n_sma_max / ((n_sma_max - 4) * (n_sma_max - 2) * n_sma)
    # The branch not taken may be NaN (the square root of a negative): where() drops it.
    adaptive = torch.sqrt(rect * (1 - beta2_t)) / bias_correction1
    return rectified, torch.where(rectified, adaptive, 1 / bias_correction1)
