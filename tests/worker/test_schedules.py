"""Every warmup x decay against its closed form, on the lr each optimizer step actually used."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from api_schemas.params import LR_DECAYS, WARMUP_SCHEDULES
from api_schemas.search_space import Scalar
from worker.optimizers import build_optimizer
from worker.schedules import build_schedule, trial_schedule, untuned_warmup_steps

LR = 0.5


def lrs_used(optimizer: torch.optim.Optimizer, scheduler: object, n_steps: int) -> list[float]:
    """The lr of optimizer steps 1..n_steps, read from what each step did to the parameter.

    The optimizer must be plain SGD on one parameter: a gradient of 1 moves it by -lr.
    """
    (param,) = optimizer.param_groups[0]["params"]
    used = []
    for _ in range(n_steps):
        before = param.item()
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()  # type: ignore[attr-defined]
        used.append(before - param.item())
    return used


def sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros((), dtype=torch.float64))], lr=LR)


def closed_form(schedule: str, decay: str, s: int, w: int, beta2: float, total: int) -> float:
    """The factor of step s (1-based), written out from the docstring of worker.schedules."""
    untuned = math.floor(2 / (1 - beta2) + 0.5)
    start = {"none": 0, "linear": w}.get(schedule, untuned)
    if schedule == "none" or start == 0:
        warm = 1.0
    elif schedule == "untuned_exponential":
        warm = 1 - math.exp(-(1 - beta2) * s)
    else:
        warm = min(1.0, s / start)
    x = min(1.0, max(0.0, (s - start - 1) / (total - start))) if total > start else 0.0
    cool = {"constant": 1.0, "linear": 1 - x, "cosine": (1 + math.cos(math.pi * x)) / 2}[decay]
    return warm * cool


@pytest.mark.parametrize(
    ("schedule", "decay", "warmup_steps", "beta2"),
    [
        *itertools.product(WARMUP_SCHEDULES, LR_DECAYS, [7], [0.9]),
        ("linear", "cosine", 0, 0.9),
        ("linear", "linear", 1, 0.9),
        ("untuned_linear", "linear", 0, 0.8),  # W = 10
        ("untuned_exponential", "cosine", 0, 0.95),  # decay from W = 40 to 60
    ],
)
def test_every_schedule_matches_its_closed_form(
    schedule: str, decay: str, warmup_steps: int, beta2: float
) -> None:
    total = 60
    optimizer = sgd()
    scheduler = build_schedule(
        optimizer,
        schedule=schedule,
        warmup_steps=warmup_steps,
        beta2=beta2,
        total_steps=total,
        decay=decay,
    )
    used = lrs_used(optimizer, scheduler, total)
    expected = [
        LR * closed_form(schedule, decay, s, warmup_steps, beta2, total)
        for s in range(1, total + 1)
    ]
    assert used == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert min(used) > 0  # neither the first nor the last step is wasted at lr 0


def factors(n: int, **kwargs: object) -> list[float]:
    optimizer = sgd()
    return [u / LR for u in lrs_used(optimizer, build_schedule(optimizer, **kwargs), n)]  # type: ignore[arg-type]


def test_hand_computed_values() -> None:
    linear = factors(
        10, schedule="linear", warmup_steps=4, beta2=0.9, total_steps=10, decay="linear"
    )
    assert linear == pytest.approx([0.25, 0.5, 0.75, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    cosine = factors(4, schedule="none", warmup_steps=9, beta2=0.9, total_steps=4, decay="cosine")
    assert cosine == pytest.approx([1, 0.853553390593, 0.5, 0.146446609407])
    untuned = factors(
        5, schedule="untuned_linear", warmup_steps=0, beta2=0.5, total_steps=5, decay="constant"
    )
    assert untuned == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    exponential = factors(
        2,
        schedule="untuned_exponential",
        warmup_steps=0,
        beta2=0.9,
        total_steps=2,
        decay="constant",
    )
    assert exponential == pytest.approx([1 - math.exp(-0.1), 1 - math.exp(-0.2)])


def test_untuned_length_rounds_half_up_not_down() -> None:
    assert 2 / (1 - 0.999) < 2000  # the float is 1999.99..., which floor would make 1999
    assert [untuned_warmup_steps(b) for b in (0.999, 0.99, 0.98, 0.95, 0.9, 0.5, 0.0)] == [
        2000,
        200,
        100,
        40,
        20,
        4,
        2,
    ]


def test_warmup_longer_than_the_run_never_decays() -> None:
    got = factors(5, schedule="linear", warmup_steps=10, beta2=0.9, total_steps=5, decay="linear")
    assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "cosine"}, "unknown warmup_schedule 'cosine'; choose from none, linear"),
        ({"decay": "step"}, "unknown lr_decay 'step'; choose from constant, cosine, linear"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"beta2": 1.0}, "beta2 must be in"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {
        "schedule": "linear",
        "warmup_steps": 3,
        "beta2": 0.9,
        "total_steps": 10,
        "decay": "constant",
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        build_schedule(sgd(), **arguments)  # type: ignore[arg-type]


def trial_lrs(params: dict[str, Scalar], total: int) -> list[float]:
    """The group lr the trainer's schedule sets before steps 1..total."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer(params, [param])
    scheduler = trial_schedule(optimizer, params, total)
    used = []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    return used


def test_a_trial_naming_only_warmup_steps_keeps_its_linear_warmup() -> None:
    used = trial_lrs({"optimizer": "adam", "lr": 0.1, "warmup_steps": 4}, total=6)
    assert used == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert trial_lrs({"optimizer": "adam", "lr": 0.1}, total=3) == pytest.approx([0.1] * 3)


def test_a_trial_reads_schedule_decay_and_beta2() -> None:
    params: dict[str, Scalar] = {
        "optimizer": "sgd",
        "lr": 1.0,
        "warmup_schedule": "untuned_linear",
        "beta2": 0.5,
        "warmup_steps": 100,
        "lr_decay": "linear",
    }
    assert trial_lrs(params, total=8) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25])


def test_adam_warmup_reference_is_not_warmed_up_twice() -> None:
    params: dict[str, Scalar] = {
        "optimizer": "adam_warmup_reference",
        "lr": 0.1,
        "warmup_steps": 5,
        "warmup_schedule": "untuned_linear",  # ignored: the optimizer warms up by itself
        "lr_decay": "linear",
    }
    # Full lr outside through the internal warmup, then the decay from step 6 to 0 after 10.
    assert trial_lrs(params, total=10) == pytest.approx([0.1] * 6 + [0.08, 0.06, 0.04, 0.02])
