"""The prune protection: a pure function of the trial's parameters."""

from __future__ import annotations

import math

import pytest

from service.pruning import may_prune, protected_until


@pytest.mark.parametrize(
    ("params", "until"),
    [
        ({"optimizer": "adam", "lr": 0.01}, 0),
        ({"optimizer": "adam", "lr": 0.01, "warmup_steps": 20}, 20),  # linear by default
        ({"optimizer": "adam", "warmup_steps": 20, "warmup_schedule": "linear"}, 20),
        ({"optimizer": "adam", "warmup_steps": 20, "warmup_schedule": "none"}, 0),
        ({"optimizer": "adam", "warmup_schedule": "untuned_linear", "beta2": 0.999}, 2000),
        ({"optimizer": "adam", "warmup_schedule": "untuned_linear"}, 2000),  # default beta2
        ({"optimizer": "adam", "warmup_schedule": "untuned_linear", "beta2": 0.99}, 200),
        ({"optimizer": "adam", "warmup_schedule": "untuned_exponential", "beta2": 0.99}, 300),
        ({"optimizer": "adam", "warmup_schedule": "untuned_exponential", "beta2": 0.999}, 3000),
        # The schedule is ignored by adam_warmup_reference; its own warmup_steps count.
        ({"optimizer": "adam_warmup_reference", "warmup_steps": 50, "warmup_schedule": "none"}, 50),
        ({"optimizer": "radam", "beta2": 0.99}, 200),
        ({"optimizer": "radam_reference", "beta2": 0.98}, 100),
        ({"optimizer": "radam", "warmup_steps": 500, "beta2": 0.99}, 500),  # the longer one
        ({"optimizer": "sgd", "warmup_steps": 10}, 10),
    ],
)
def test_protection_lasts_for_the_longest_warmup(params: dict, until: int) -> None:
    assert protected_until(params) == until
    assert not may_prune(params, until - 1)
    assert may_prune(params, until)


def test_the_exponential_warmup_is_at_95_percent_when_protection_ends() -> None:
    beta2 = 0.995
    until = protected_until(
        {"optimizer": "adam", "warmup_schedule": "untuned_exponential", "beta2": beta2}
    )
    assert -math.expm1(-(1 - beta2) * until) == pytest.approx(0.95, abs=0.001)
