"""Build an optimizer from a trial's parameters.

Each name in ``api_schemas.params.OPTIMIZERS`` has one small builder; a parameter the trial does
not set takes its default from ``api_schemas.params.PARAMS``. Parameters that do not apply to the
chosen optimizer (``momentum`` for Adam, ``beta2`` for SGD) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from api_schemas.params import PARAMS
from api_schemas.search_space import Scalar
from worker.reference_optimizers import AdamWarmupReference, RAdamReference

ModelParams = Iterable[torch.nn.Parameter]


class TrialParams:
    """Typed reads of trial parameters, falling back to PARAMS defaults."""

    def __init__(self, values: Mapping[str, Scalar]) -> None:
        self._values = values

    def _get(self, name: str) -> Scalar:
        value = self._values.get(name, PARAMS[name].default)
        if value is None:
            raise ValueError(f"parameter {name!r} is required")
        return value  # type: ignore[return-value]

    def number(self, name: str) -> float:
        return float(self._get(name))

    def flag(self, name: str) -> bool:
        return bool(self._get(name))

    def whole(self, name: str) -> int:
        return int(self._get(name))

    def betas(self) -> tuple[float, float]:
        return self.number("beta1"), self.number("beta2")

    def adam_family(self) -> dict[str, Any]:
        """The keyword arguments every Adam-family optimizer takes."""
        return {
            "lr": self.number("lr"),
            "betas": self.betas(),
            "eps": self.number("eps"),
            "weight_decay": self.number("weight_decay"),
        }


# foreach=True: one fused kernel launch per op over all tensors, and no host sync per step
# (the step counters stay on the CPU unless capturable=True).


def _sgd(p: TrialParams, model_params: ModelParams) -> torch.optim.Optimizer:
    momentum = p.number("momentum")
    # Nesterov with zero momentum is plain SGD; torch rejects the combination, a grid need not.
    nesterov = p.flag("nesterov") and momentum > 0
    return torch.optim.SGD(
        model_params,
        lr=p.number("lr"),
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=p.number("weight_decay"),
        foreach=True,
    )


def _adam(p: TrialParams, model_params: ModelParams) -> torch.optim.Optimizer:
    """Adam; ``weight_decay`` is L2 added to the gradient (torch's semantics)."""
    return torch.optim.Adam(
        model_params,
        **p.adam_family(),
        foreach=True,
    )


def _adamw(p: TrialParams, model_params: ModelParams) -> torch.optim.Optimizer:
    """AdamW; decoupled weight decay. Its default comes from PARAMS (0), not torch's 0.01."""
    return torch.optim.AdamW(
        model_params,
        **p.adam_family(),
        foreach=True,
    )


def _radam(p: TrialParams, model_params: ModelParams) -> torch.optim.Optimizer:
    """``torch.optim.RAdam``: rectified once rho_t > 5, momentum-SGD before; weight decay is L2
    unless ``decoupled_weight_decay``."""
    return torch.optim.RAdam(
        model_params,
        **p.adam_family(),
        decoupled_weight_decay=p.flag("decoupled_weight_decay"),
        foreach=True,
    )


def _radam_reference(p: TrialParams, model_params: ModelParams) -> torch.optim.Optimizer:
    """The RAdam authors' version: N_sma >= 5, early steps skipped unless degenerated_to_sgd."""
    return RAdamReference(
        model_params,
        **p.adam_family(),
        degenerated_to_sgd=p.flag("degenerated_to_sgd"),
    )


def _adam_warmup_reference(p: TrialParams, model_params: ModelParams) -> torch.optim.Optimizer:
    """The article's AdamWarmup, warming up over ``warmup_steps`` inside the optimizer."""
    return AdamWarmupReference(
        model_params,
        **p.adam_family(),
        warmup=p.whole("warmup_steps"),
    )


OptimizerBuilder = Callable[[TrialParams, ModelParams], torch.optim.Optimizer]

OPTIMIZER_BUILDERS: dict[str, OptimizerBuilder] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "radam": _radam,
    "radam_reference": _radam_reference,
    "adam_warmup_reference": _adam_warmup_reference,
}
"""One builder per name in ``api_schemas.params.OPTIMIZERS``."""


def build_optimizer(
    params: Mapping[str, Scalar], model_params: ModelParams
) -> torch.optim.Optimizer:
    """Build the optimizer named by ``params["optimizer"]`` over ``model_params``.

    Raises ValueError for an unknown optimizer name or a missing ``lr``.
    """
    name = params.get("optimizer")
    if not isinstance(name, str) or name not in OPTIMIZER_BUILDERS:
        known = ", ".join(OPTIMIZER_BUILDERS)
        raise ValueError(f"unknown optimizer {name!r}; choose from {known}")
    return OPTIMIZER_BUILDERS[name](TrialParams(params), model_params)
