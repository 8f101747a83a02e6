"""The optimizers of ``worker.optimizers`` for M models at once, each with its own settings.

The models' parameters are one ``(M, P)`` tensor, a row per model (``worker.stacked`` lays
them out), and so are the gradients and every state; each model's hyperparameters (lr, betas,
eps, weight decay, momentum, flags) are float64 tensors of shape ``(M, 1)``, and so is its lr
schedule, read from ``worker.schedules.trial_factor``. One step is a handful of elementwise
operations over the whole stack, whatever M is.

Each update follows the sequential optimizer's arithmetic, operation for operation, so a stacked
model takes the step the sequential one takes, up to the rounding of fused multiply-adds:

- ``sgd``, ``adam``, ``adamw``, ``radam``: ``torch.optim``'s foreach implementations (torch's
  RAdam: rectified once rho_t > 5; weight decay L2 unless ``decoupled_weight_decay``);
- ``radam_reference``, ``adam_warmup_reference``: ``worker.reference_optimizers``.

Step-dependent branches (RAdam's rectification, AdamWarmup's ramp, a skipped step) are chosen
per model with ``torch.where``; nothing mixes one model's row with another's, so a model whose
numbers become NaN leaves the others as they were. Models of different optimizers may share a
stack: each maximal run of consecutive models with one optimizer is a segment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from api_schemas.search_space import Scalar
from worker.optimizers import OPTIMIZER_BUILDERS, TrialParams
from worker.reference_optimizers import radam_step_sizes
from worker.schedules import Factor, trial_factor

LR_BLOCK = 64
"""Steps of per-model lrs computed at a time: one host-to-device copy per block, not per step."""


@dataclass
class _Segment:
    """Consecutive models with one optimizer: rows ``start:stop`` of the stack."""

    name: str
    start: int
    stop: int
    hyper: dict[str, Tensor]
    """Per-model hyperparameters, float64 (n, 1)."""
    flags: dict[str, bool]
    """Host-side facts that let a step skip work (no weight decay, no momentum, ...)."""


def _hyperparameters(
    params: Sequence[Mapping[str, Scalar]], device: torch.device
) -> tuple[dict[str, Tensor], dict[str, bool]]:
    read = [TrialParams(p) for p in params]

    def column(values: list[float]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device).unsqueeze(1)

    names = ("beta1", "beta2", "eps", "weight_decay", "momentum")
    hyper = {name: column([r.number(name) for r in read]) for name in names}
    hyper["warmup_steps"] = column([float(r.whole("warmup_steps")) for r in read])
    momentum = [r.number("momentum") for r in read]
    # Nesterov with zero momentum is plain SGD, as worker.optimizers builds it.
    nesterov = [r.flag("nesterov") and m > 0 for r, m in zip(read, momentum, strict=True)]
    flags = {
        "nesterov": nesterov,
        "decoupled": [r.flag("decoupled_weight_decay") for r in read],
        "degenerated": [r.flag("degenerated_to_sgd") for r in read],
    }
    for name, values in flags.items():
        hyper[name] = torch.tensor(values, device=device).unsqueeze(1)
    summary = {
        "weight_decay": any(r.number("weight_decay") != 0 for r in read),
        "momentum": any(m != 0 for m in momentum),
        "nesterov": any(nesterov),
        "degenerated": any(flags["degenerated"]),
    }
    return hyper, summary


def _segments(params: Sequence[Mapping[str, Scalar]], device: torch.device) -> list[_Segment]:
    segments: list[_Segment] = []
    start = 0
    for i in range(1, len(params) + 1):
        if i < len(params) and params[i].get("optimizer") == params[start].get("optimizer"):
            continue
        name = params[start].get("optimizer")
        if not isinstance(name, str) or name not in OPTIMIZER_BUILDERS:
            known = ", ".join(OPTIMIZER_BUILDERS)
            raise ValueError(f"unknown optimizer {name!r}; choose from {known}")
        hyper, flags = _hyperparameters(params[start:i], device)
        segments.append(_Segment(name, start, i, hyper, flags))
        start = i
    return segments


class StackedOptimizer:
    """One optimizer step for every row of ``param`` (M models), each with its own settings.

    ``param`` and ``grad`` are ``(M, P)`` tensors owned by the caller (the trainer writes the
    gradients into ``grad``); ``params[m]`` are model m's trial parameters, read as
    ``worker.optimizers.build_optimizer`` reads them, and its lr follows
    ``trial_factor(params[m], total_steps)``. Call ``step()`` once per training step.
    """

    def __init__(
        self,
        param: Tensor,
        grad: Tensor,
        params: Sequence[Mapping[str, Scalar]],
        total_steps: int,
    ) -> None:
        if param.dim() != 2 or param.shape != grad.shape or param.size(0) != len(params):
            raise ValueError("param and grad must be (M, P) with one row per model's params")
        for p in params:
            TrialParams(p).number("lr")  # a missing lr fails here, as build_optimizer does
        self.param, self.grad = param, grad
        self.steps_taken = 0
        self._segments = _segments(params, param.device)
        self._peak_lr = [TrialParams(p).number("lr") for p in params]
        self._factors: list[Factor] = [trial_factor(p, total_steps) for p in params]
        self._lr_block = torch.empty(0)
        self._exp_avg = torch.zeros_like(param)
        """Adam's first moment; SGD's momentum buffer."""
        self._exp_avg_sq = torch.zeros_like(param)

    def keep(self, rows: Sequence[int], param: Tensor, grad: Tensor) -> None:
        """Only ``rows`` of the stack go on (others have left it), now in ``param``/``grad``."""
        if list(rows) != sorted(set(rows)):
            raise ValueError("rows must be increasing")
        index = torch.tensor(list(rows), dtype=torch.long, device=self.param.device)
        self.param, self.grad = param, grad
        self._exp_avg = self._exp_avg.index_select(0, index)
        self._exp_avg_sq = self._exp_avg_sq.index_select(0, index)
        self._peak_lr = [self._peak_lr[r] for r in rows]
        self._factors = [self._factors[r] for r in rows]
        self._lr_block = torch.empty(0)
        segments = []
        start = 0
        for segment in self._segments:
            inside = [r - segment.start for r in rows if segment.start <= r < segment.stop]
            if not inside:
                continue
            local = torch.tensor(inside, dtype=torch.long, device=self.param.device)
            hyper = {name: value.index_select(0, local) for name, value in segment.hyper.items()}
            segments.append(
                _Segment(segment.name, start, start + len(inside), hyper, segment.flags)
            )
            start += len(inside)
        self._segments = segments

    def _lrs(self, step: int) -> Tensor:
        """Every model's scheduled lr for ``step`` (1-based), float64 (M, 1)."""
        offset = (step - 1) % LR_BLOCK
        if offset == 0 or self._lr_block.numel() == 0:
            steps = range(step - offset, step - offset + LR_BLOCK)
            # Peak lr times the factor, in Python floats: LambdaLR's product, to the last bit.
            rows = [
                [lr * f(s) for lr, f in zip(self._peak_lr, self._factors, strict=True)]
                for s in steps
            ]
            self._lr_block = torch.tensor(rows, dtype=torch.float64).to(
                self.param.device, non_blocking=True
            )
        return self._lr_block[offset].unsqueeze(1)

    @torch.no_grad()
    def step(self) -> None:
        """Update every model from the gradients in ``grad``."""
        self.steps_taken += 1
        lr = self._lrs(self.steps_taken)
        for segment in self._segments:
            rows = slice(segment.start, segment.stop)
            state = _State(
                self.param[rows],
                self.grad[rows],
                self._exp_avg[rows],
                self._exp_avg_sq[rows],
                lr[rows],
                self.steps_taken,
                segment,
            )
            _UPDATES[segment.name](state)


@dataclass
class _State:
    """One segment's rows for one step: views into the stack's tensors."""

    p: Tensor
    g: Tensor
    m: Tensor
    v: Tensor
    lr: Tensor
    t: int
    segment: _Segment

    def h(self, name: str) -> Tensor:
        """A float64 (n, 1) hyperparameter."""
        return self.segment.hyper[name]

    def cast(self, value: Tensor) -> Tensor:
        """A float64 per-model value in the parameters' dtype, as torch casts a Python scalar."""
        return value.to(self.p.dtype)

    def flag(self, name: str) -> bool:
        return self.segment.flags[name]


def _l2(s: _State, coefficient: Tensor) -> Tensor:
    """``g + wd * p``: weight decay added to the gradient."""
    return s.g.add(s.p * s.cast(coefficient)) if s.flag("weight_decay") else s.g


def _torch_moments(s: _State, g: Tensor) -> None:
    """torch's Adam and RAdam: ``m.lerp_(g, 1 - β1)``, ``v = β2 v + (1 - β2) g²``."""
    s.m.lerp_(g, s.cast(1 - s.h("beta1")))
    s.v.mul_(s.cast(s.h("beta2"))).addcmul_(g * s.cast(1 - s.h("beta2")), g)


def _reference_moments(s: _State) -> None:
    """hps's reference optimizers: ``m = β1 m + (1 - β1) g``, ``v = β2 v + (1 - β2) g²``."""
    s.v.mul_(s.cast(s.h("beta2"))).addcmul_(s.g * s.cast(1 - s.h("beta2")), s.g)
    s.m.mul_(s.cast(s.h("beta1"))).add_(s.g * s.cast(1 - s.h("beta1")))


def _decay(s: _State, lr: Tensor, applies: Tensor | None = None) -> None:
    """Decoupled weight decay, ``p *= 1 - lr * wd``, for the models where ``applies``."""
    if not s.flag("weight_decay"):
        return
    factor = 1 - lr * s.h("weight_decay")
    if applies is not None:
        factor = torch.where(applies, factor, 1.0)
    s.p.mul_(s.cast(factor))


def _adam(s: _State, *, decoupled: bool) -> None:
    """torch.optim.Adam (L2 weight decay) or AdamW (decoupled)."""
    if decoupled:
        _decay(s, s.lr)
        g = s.g
    else:
        g = _l2(s, s.h("weight_decay"))
    _torch_moments(s, g)
    bias_correction1 = 1 - s.h("beta1") ** s.t
    bias_correction2_sqrt = (1 - s.h("beta2") ** s.t) ** 0.5
    denom = s.v.sqrt().div_(s.cast(bias_correction2_sqrt)).add_(s.cast(s.h("eps")))
    s.p.addcdiv_(s.m * s.cast(-(s.lr / bias_correction1)), denom)


def _radam(s: _State) -> None:
    """torch.optim.RAdam: Adam scaled by r_t once rho_t > 5, momentum SGD before."""
    decoupled = s.h("decoupled")
    _decay(s, s.lr, decoupled)
    g = _l2(s, torch.where(decoupled, 0.0, s.h("weight_decay")))
    _torch_moments(s, g)
    beta1, beta2, t = s.h("beta1"), s.h("beta2"), s.t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * (beta2**t) / (1 - beta2**t)
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    rect = torch.where(rho_t > 5, ratio.clamp(min=0) ** 0.5, 0.0)
    unrectified = torch.where(rect > 0, 0.0, 1.0)
    bias_correction1 = 1 - beta1**t
    unrect_step_size = (s.lr * unrectified / bias_correction1) * -1
    adaptive = ((1 - beta2**t) ** 0.5) * (s.lr * rect / bias_correction1) * -1
    # As torch: 1 / ((sqrt(v) + eps) / adaptive) + unrect; adaptive = -0.0 gives -0.0 + unrect.
    buffer = s.v.sqrt().add_(s.cast(s.h("eps"))).div_(s.cast(adaptive)).reciprocal_()
    s.p.addcmul_(s.m, buffer.add_(s.cast(unrect_step_size)))


def _radam_reference(s: _State) -> None:
    """RAdamReference: N_sma >= 5; before that a momentum-SGD step or none at all."""
    _reference_moments(s)
    rectified, step_size = radam_step_sizes(s.t, s.h("beta1"), s.h("beta2"))
    taken = rectified | s.h("degenerated")
    _decay(s, s.lr, taken)
    scaled = -step_size * s.lr
    denom = s.v.sqrt().add_(s.cast(s.h("eps")))
    s.p.addcdiv_(s.m * s.cast(torch.where(rectified, scaled, 0.0)), denom)
    if s.flag("degenerated"):
        s.p.add_(s.m * s.cast(torch.where(taken & ~rectified, scaled, 0.0)))


def _adam_warmup_reference(s: _State) -> None:
    """AdamWarmupReference: lr ``1e-8 + t * lr / warmup`` while ``t < warmup``, then ``lr``."""
    _reference_moments(s)
    warmup, t = s.h("warmup_steps"), s.t
    # Where warmup == 0 the ramp is inf (t / 0) and not taken.
    scheduled_lr = torch.where(warmup > t, 1e-8 + t * s.lr / warmup, s.lr)
    step_size = scheduled_lr * (1 - s.h("beta2") ** t) ** 0.5 / (1 - s.h("beta1") ** t)
    _decay(s, scheduled_lr)
    s.p.addcdiv_(s.m * s.cast(-step_size), s.v.sqrt().add_(s.cast(s.h("eps"))))


def _sgd(s: _State) -> None:
    """torch.optim.SGD: L2 weight decay, momentum (first step: the gradient), Nesterov."""
    g = _l2(s, s.h("weight_decay"))
    if s.flag("momentum"):
        if s.t == 1:
            s.m.copy_(g)
        else:
            s.m.mul_(s.cast(s.h("momentum"))).add_(g)
        if s.flag("nesterov"):
            g = torch.where(s.h("nesterov"), g + s.m * s.cast(s.h("momentum")), s.m)
        else:
            g = s.m
    s.p.add_(g * s.cast(-s.lr))


_UPDATES: dict[str, Callable[[_State], None]] = {
    "sgd": _sgd,
    "adam": lambda s: _adam(s, decoupled=False),
    "adamw": lambda s: _adam(s, decoupled=True),
    "radam": _radam,
    "radam_reference": _radam_reference,
    "adam_warmup_reference": _adam_warmup_reference,
}
"""One stacked update per name in ``worker.optimizers.OPTIMIZER_BUILDERS``."""
