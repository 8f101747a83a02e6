"""Reading Optuna trials into outcome arrays: every failure counted at the chance loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from api_schemas import StudySpec
from service import trials as tv
from service.analysis import cells

SPACE: dict[str, Any] = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
    "warmup_steps": {"type": "categorical", "choices": [0, 50]},
    "beta2": {"type": "categorical", "choices": [0.98, 0.99]},
    "eps": {"type": "fixed", "value": 1e-8},
}


def make_spec(**overrides: Any) -> StudySpec:
    body: dict[str, Any] = {
        "name": "cells",
        "workload": {"name": "postln_transformer"},
        "search_space": SPACE,
        "sampler": {"type": "grid"},
        "seeds_per_trial": 2,
    }
    return StudySpec.model_validate(body | overrides)


def trial(
    params: dict[str, Any],
    state: TrialState = TrialState.COMPLETE,
    losses: tuple[float, float] = (1.0, 1.2),
    diverged: tuple[bool, bool] = (False, False),
    **attrs: Any,
) -> FrozenTrial:
    seeds = [
        {"seed": s, "loss": loss, "diverged": d, "steps": 10}
        for s, loss, d in zip((0, 1), losses, diverged, strict=True)
    ]
    user_attrs = {tv.ATTR_SEEDS: seeds if state == TrialState.COMPLETE else [], **attrs}
    return optuna.trial.create_trial(
        state=state,
        params=params,
        distributions={k: CategoricalDistribution([v]) for k, v in params.items()},
        value=sum(losses) / 2 if state == TrialState.COMPLETE else None,
        user_attrs=user_attrs,
        intermediate_values={10: 2.0, 20: 1.5},
    )


ADAM = {"optimizer": "adam", "lr": 1e-2, "warmup_steps": 0, "beta2": 0.98, "eps": 1e-8}


def test_failures_are_counted_at_the_chance_loss_and_never_dropped() -> None:
    error = {"kind": "error", "message": "boom"}
    lost = {"kind": "lease_expired", "message": "gone"}
    trials = [
        trial(ADAM, losses=(1.0, 9.0), diverged=(False, True)),  # one diverged seed
        trial({**ADAM, "lr": 1e-3}, state=TrialState.PRUNED),
        trial({**ADAM, "warmup_steps": 50}, state=TrialState.FAIL, failure=error),
        trial({**ADAM, "beta2": 0.99}, state=TrialState.FAIL, failure=lost, retried=True),
        trial({**ADAM, "beta2": 0.99}, losses=(0.5, 0.7)),  # the re-run of the one above
        trial({**ADAM, "optimizer": "radam"}, state=TrialState.RUNNING),
    ]
    (o,) = cells.build(make_spec(), trials)
    chance = math.log(32)
    assert o.chance == pytest.approx(chance)
    c = o.counts
    assert (c.trials, c.completed, c.pruned, c.failed) == (4, 2, 1, {"error": 1})
    assert (c.superseded, c.pending) == (1, 1)
    assert (c.seed_runs, c.failed_seed_runs, c.diverged_seeds) == (8, 5, 1)

    adam = o.arms.index(cells.Arm("adam", (("beta2", 0.98),)))
    lr = {float(x): i for i, x in enumerate(o.lrs)}
    w = {x: i for i, x in enumerate(o.warmups)}
    assert o.loss[adam, lr[1e-2], w["0"]].tolist() == pytest.approx([1.0, chance])
    assert o.loss[adam, lr[1e-3], w["0"]].tolist() == pytest.approx([chance, chance])
    assert o.loss[adam, lr[1e-2], w["50"]].tolist() == pytest.approx([chance, chance])
    assert o.failures[adam].sum() == 5 and o.runs[adam].sum() == 6
    rerun = o.arms.index(cells.Arm("adam", (("beta2", 0.99),)))
    assert o.loss[rerun, lr[1e-2], w["0"]].tolist() == pytest.approx([0.5, 0.7])
    assert o.failures[rerun].sum() == 0  # the superseded failure is not counted


def test_a_loss_above_chance_is_clipped() -> None:
    (o,) = cells.build(make_spec(), [trial(ADAM, losses=(5.0, 1.0))])
    assert np.nanmax(o.loss) == pytest.approx(math.log(32))


@pytest.mark.parametrize(
    ("params", "label"),
    [
        ({"warmup_steps": 0}, "0"),
        ({"warmup_steps": 50}, "50"),
        ({"warmup_steps": 50, "warmup_schedule": "none"}, "0"),
        ({"warmup_schedule": "untuned_linear"}, "untuned_linear"),
        ({"warmup_steps": 20, "warmup_schedule": "untuned_exponential"}, "untuned_exponential"),
        ({"optimizer": "adam_warmup_reference", "warmup_steps": 30}, "30"),
        ({"optimizer": "adam_warmup_reference", "warmup_schedule": "untuned_linear"}, "0"),
        ({}, "0"),
    ],
)
def test_warmup_labels(params: dict[str, Any], label: str) -> None:
    assert cells.warmup_label({"optimizer": "adam", **params}) == label


def test_arms_are_the_optimizer_and_the_varying_finite_parameters_in_spec_order() -> None:
    spec = make_spec()
    assert cells.arm_params(spec) == ["beta2"]  # eps is fixed, lr and warmup are axes
    trials = [
        trial({**ADAM, "optimizer": o, "beta2": b}) for o in ("radam", "adam") for b in (0.99, 0.98)
    ]
    (o,) = cells.build(spec, trials)
    assert [a.label for a in o.arms] == [
        "adam · beta2=0.98",
        "adam · beta2=0.99",
        "radam · beta2=0.98",
        "radam · beta2=0.99",
    ]


def test_warmups_sort_by_length_then_untuned_schedules() -> None:
    labels = ["untuned_linear", "100", "0", "untuned_exponential", "50"]
    space = SPACE | {
        "warmup_schedule": {"type": "categorical", "choices": ["linear", "untuned_linear"]},
        "warmup_steps": {"type": "categorical", "choices": [0, 50, 100]},
    }
    trials = [
        trial({**ADAM, "warmup_steps": int(w)} if w.isdigit() else {**ADAM, "warmup_schedule": w})
        for w in labels
    ]
    (o,) = cells.build(make_spec(search_space=space), trials)
    assert o.warmups == ["0", "50", "100", "untuned_linear", "untuned_exponential"]


def test_controls_get_their_own_outcomes_and_chance_loss() -> None:
    spec = make_spec(controls=[{"role": "negative", "workload": {"name": "digits_mlp"}}])
    trials = [
        trial({**ADAM, "workload": "postln_transformer"}),
        trial({**ADAM, "workload": "digits_mlp"}, losses=(0.1, 0.2)),
        trial({**ADAM, "workload": "digits_mlp", "lr": 1e-3}, state=TrialState.PRUNED),
    ]
    subject, control = cells.build(spec, trials)
    assert (subject.label, control.label) == ("postln_transformer", "digits_mlp")
    assert control.chance == pytest.approx(math.log(10))
    assert (subject.counts.trials, control.counts.trials, control.counts.pruned) == (1, 2, 1)


def test_a_continuous_lr_is_binned_on_a_log_scale() -> None:
    space = SPACE | {"lr": {"type": "float", "low": 1e-4, "high": 1e-0, "log": True}}
    spec = make_spec(search_space=space, sampler={"type": "tpe"}, n_trials=5)
    lrs = [1.1e-4, 1.3e-4, 2e-3, 0.9]
    (o,) = cells.build(spec, [trial({**ADAM, "lr": lr}) for lr in lrs])
    assert len(o.lrs) == 3  # the two smallest share a bin
    assert o.runs.sum() == 8 and o.runs.max() == 4
    assert np.all((o.lrs > 1e-4) & (o.lrs < 1.0))


def test_values_stored_before_the_edge_bounded_them_cannot_poison_the_analysis() -> None:
    """An older database may hold a loss of 1.7e308 or -1.7e308: the analysis, the report and
    its figures still come out, finite."""
    from service.analysis import analyse
    from service.report import html

    spec = make_spec(analysis={"margin": 0.1})
    huge = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        params=ADAM,
        distributions={k: CategoricalDistribution([v]) for k, v in ADAM.items()},
        value=1.0,
        user_attrs={
            tv.ATTR_SEEDS: [
                {"seed": 0, "loss": 1.7e308, "diverged": False, "steps": 10},
                {"seed": 1, "loss": -1.7e308, "diverged": False, "steps": 10},
            ]
        },
        intermediate_values={10: 1.7e308, 20: 1.0},
    )
    other = trial({**ADAM, "lr": 1e-3})
    analysis = analyse(1, "old", spec, [huge, other])
    arm = analysis.workloads[0].arms[0]
    assert all(v is None or math.isfinite(v) for row in arm.cells.mean_loss for v in row), arm.cells
    assert all(c.steps == [20] for c in arm.curves if c.lr == 1e-2)
    assert "<img" in html(analysis)
    analysis.model_dump_json()  # every number finite: JSON can carry it
