"""Every optimizer name builds the right torch class with the right hyperparameters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from api_schemas.params import ADAM_FAMILY, OPTIMIZERS
from api_schemas.search_space import Scalar
from worker.optimizers import OPTIMIZER_BUILDERS, build_optimizer
from worker.reference_optimizers import AdamWarmupReference, RAdamReference

EXPECTED_CLASS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "radam_reference": RAdamReference,
    "adam_warmup_reference": AdamWarmupReference,
}


def _group(params: dict[str, Scalar]) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    optimizer = build_optimizer(params, [torch.nn.Parameter(torch.zeros(3))])
    return optimizer, optimizer.param_groups[0]


def test_registry_covers_every_optimizer_name() -> None:
    assert set(OPTIMIZER_BUILDERS) == set(OPTIMIZERS) == set(EXPECTED_CLASS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_builds_the_named_class(name: str) -> None:
    optimizer, group = _group({"optimizer": name, "lr": 0.01})
    assert type(optimizer) is EXPECTED_CLASS[name]
    assert group["lr"] == 0.01
    assert group["weight_decay"] == 0.0  # PARAMS default, not AdamW's torch default of 0.01
    if type(optimizer).__module__.startswith("torch."):
        assert group["foreach"] is True


@pytest.mark.parametrize("name", sorted(ADAM_FAMILY))
def test_adam_family_defaults_and_overrides(name: str) -> None:
    _, group = _group({"optimizer": name, "lr": 0.01})
    assert group["betas"] == (0.9, 0.999)
    assert group["eps"] == 1e-8

    _, group = _group(
        {
            "optimizer": name,
            "lr": 0.02,
            "beta1": 0.8,
            "beta2": 0.98,
            "eps": 1e-6,
            "weight_decay": 0.1,
            "momentum": 0.5,
        }
    )
    assert group["lr"] == 0.02
    assert group["betas"] == (0.8, 0.98)
    assert group["eps"] == 1e-6
    assert group["weight_decay"] == 0.1


def test_radam_is_torch_flavour_with_l2_weight_decay() -> None:
    _, group = _group({"optimizer": "radam", "lr": 0.01, "weight_decay": 0.1})
    assert group["decoupled_weight_decay"] is False
    params: dict[str, Scalar] = {"optimizer": "radam", "lr": 0.01, "decoupled_weight_decay": True}
    assert _group(params)[1]["decoupled_weight_decay"] is True


def test_radam_reference_skips_early_steps_unless_degenerated_to_sgd() -> None:
    assert _group({"optimizer": "radam_reference", "lr": 0.01})[1]["degenerated_to_sgd"] is False
    params: dict[str, Scalar] = {"optimizer": "radam_reference", "lr": 0.01}
    group = _group({**params, "degenerated_to_sgd": True})[1]
    assert group["degenerated_to_sgd"] is True


def test_adam_warmup_reference_warms_up_over_warmup_steps() -> None:
    assert _group({"optimizer": "adam_warmup_reference", "lr": 0.01})[1]["warmup"] == 0
    params: dict[str, Scalar] = {"optimizer": "adam_warmup_reference", "lr": 0.01}
    assert _group({**params, "warmup_steps": 50})[1]["warmup"] == 50


def test_sgd_defaults_and_overrides() -> None:
    _, group = _group({"optimizer": "sgd", "lr": 0.1})
    assert (group["momentum"], group["nesterov"]) == (0.9, False)

    _, group = _group(
        {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.5,
            "nesterov": True,
            "weight_decay": 1e-4,
            "beta2": 0.5,
        }
    )
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.5, True, 1e-4)


def test_sgd_nesterov_without_momentum_is_plain_sgd() -> None:
    _, group = _group({"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": True})
    assert (group["momentum"], group["nesterov"]) == (0.0, False)


@pytest.mark.parametrize("params", [{"optimizer": "lamb", "lr": 0.1}, {"lr": 0.1}])
def test_unknown_optimizer_is_a_clear_error(params: dict[str, Scalar]) -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        _group(params)


def test_missing_lr_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="lr"):
        _group({"optimizer": "adam"})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_a_tiny_problem(name: str) -> None:
    # Eight steps: radam_reference skips steps 1-5 by default and must still move by step 8.
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = build_optimizer({"optimizer": name, "lr": 0.1, "beta2": 0.9}, [weight])
    for _ in range(8):
        optimizer.zero_grad()
        (weight**2).sum().backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    assert torch.isfinite(weight).all() and (weight < 1).all()
