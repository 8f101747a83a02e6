"""Stacked training: every optimizer and schedule gives the sequential run, model by model.

The trainer-level tests put several configurations in one stack (what a batch of trials of one
workload will do), compare each row with the same model trained alone by ``torch.optim`` (or
hps's reference optimizers) under ``LambdaLR``, and check the paired-seed property: a seed is
the same run alone and in a stack of many.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence

import pytest
import torch
from torch import nn

from api_schemas import PostLNTransformer, SortTaskConfig
from api_schemas.search_space import Scalar
from worker.optimizers import build_optimizer
from worker.reference_optimizers import radam_step_size, radam_step_sizes
from worker.runs import batch_loss
from worker.schedules import trial_schedule
from worker.stacked import ModelStack, Stacking
from worker.workloads import Batch, build_task

CPU = torch.device("cpu")
STEPS = 100
SMALL = SortTaskConfig(
    seq_len=6,
    vocab=8,
    n_layers=1,
    d_model=16,
    n_heads=2,
    dim_feedforward=32,
    batch_size=8,
    steps=STEPS,
)
TASK = build_task(PostLNTransformer(config=SMALL))
RTOL = 1e-5

SCHEDULES: list[dict[str, Scalar]] = [
    {"warmup_schedule": "none", "lr_decay": "constant"},
    {"warmup_schedule": "linear", "warmup_steps": 20, "lr_decay": "cosine"},
    {"warmup_schedule": "untuned_linear", "lr_decay": "linear"},
    {"warmup_schedule": "untuned_exponential", "lr_decay": "cosine"},
    {"warmup_schedule": "linear", "warmup_steps": 0, "lr_decay": "linear"},
    {"warmup_schedule": "none", "lr_decay": "cosine"},
]
"""Every warmup kind and every decay; the untuned ones last 40 steps at beta2 = 0.95."""

OPTIMIZERS: dict[str, list[dict[str, Scalar]]] = {
    "sgd": [
        {"lr": 0.1, "momentum": 0.0},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    ],
    "adam": [{"lr": 3e-3}, {"lr": 1e-3, "weight_decay": 0.01, "beta1": 0.8}],
    "adamw": [{"lr": 3e-3, "weight_decay": 0.1}, {"lr": 1e-3, "eps": 1e-6}],
    "radam": [
        {"lr": 3e-3},
        {"lr": 3e-3, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 1e-3, "weight_decay": 0.01},
    ],
    "radam_reference": [
        {"lr": 3e-3, "degenerated_to_sgd": False, "weight_decay": 0.01},
        {"lr": 3e-3, "degenerated_to_sgd": True, "weight_decay": 0.01},
    ],
    "adam_warmup_reference": [
        {"lr": 3e-3, "warmup_steps": 20},
        {"lr": 3e-3, "warmup_steps": 0, "weight_decay": 0.1},
    ],
}
"""Per optimizer, the settings its stack mixes: each flag both ways where it has one."""


def _configs(optimizer: str) -> list[dict[str, Scalar]]:
    """``optimizer`` under every schedule, and in every setting, at beta2 = 0.95."""
    settings = OPTIMIZERS[optimizer]
    return [
        {"optimizer": optimizer, "beta2": 0.95, **SCHEDULES[i % len(SCHEDULES)]}
        | settings[i % len(settings)]
        for i in range(max(len(SCHEDULES), len(settings)))
    ]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # On a small shared machine torch's thread pool spins against other processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batches(seeds: Sequence[int], steps: int) -> list[list[Batch]]:
    """``steps`` training batches of each seed, as the trainer draws them."""
    out = []
    for seed in seeds:
        stream: Iterator[Batch] = TASK.train_batches(seed)
        out.append([next(stream) for _ in range(steps)])
    return out


def _sequential(
    model: nn.Module, params: Mapping[str, Scalar], batches: list[Batch]
) -> list[float]:
    """The sequential trainer's steps for one model: its training loss at every step."""
    model = copy.deepcopy(model)
    optimizer = build_optimizer(params, model.parameters())
    scheduler = trial_schedule(optimizer, params, STEPS)
    losses = []
    for batch in batches:
        loss, _ = batch_loss(model, batch, autocast=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def _stacked(
    models: Sequence[nn.Module],
    params: Sequence[Mapping[str, Scalar]],
    batches: Sequence[list[Batch]],
) -> torch.Tensor:
    """Every model's training loss at every step, stacked: (steps, models)."""
    stack = ModelStack(models, params, STEPS, CPU)
    return torch.stack([stack.step([b[step] for b in batches]) for step in range(len(batches[0]))])


def _assert_close(ours: Sequence[float], theirs: Sequence[float], what: str) -> None:
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert math.isfinite(a), f"{what}: step {step} is {a}"
        assert a == pytest.approx(b, rel=RTOL), f"{what}: step {step}: {a} vs {b}"


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_stack_of_configs_matches_each_sequential_run(optimizer: str) -> None:
    configs = _configs(optimizer)
    seeds = list(range(len(configs)))  # one seed per row: configs and seeds both vary
    models = [TASK.build_model(seed) for seed in seeds]
    batches = _batches(seeds, STEPS)
    stacked = _stacked(models, configs, batches)
    for row, (model, params) in enumerate(zip(models, configs, strict=True)):
        ours = stacked[:, row].tolist()
        _assert_close(ours, _sequential(model, params, batches[row]), f"{params}")
        assert len(set(ours)) > 1, f"{params} never moved"


def test_stacked_path_repeats_bit_for_bit() -> None:
    configs = _configs("radam_reference")[:4] + _configs("adam")[:2]
    models = [TASK.build_model(seed) for seed in range(len(configs))]
    batches = _batches(range(len(configs)), 30)
    first = _stacked(models, configs, batches)
    assert torch.equal(first, _stacked(models, configs, batches))


def test_seed_is_the_same_run_alone_and_in_a_stack_of_48() -> None:
    params: dict[str, Scalar] = {"optimizer": "radam", "lr": 3e-3, "beta2": 0.95}
    seeds = list(range(48))
    models = [TASK.build_model(seed) for seed in seeds]
    batches = _batches(seeds, STEPS)
    crowd = _stacked(models, [params] * len(seeds), batches)
    for i in (0, 17, 47):
        alone = _stacked([models[i]], [params], [batches[i]])
        _assert_close(crowd[:, i].tolist(), alone[:, 0].tolist(), f"seed {i}")


def test_a_nan_stays_in_its_own_row() -> None:
    good: dict[str, Scalar] = {"optimizer": "adam", "lr": 3e-3}
    wild: dict[str, Scalar] = {"optimizer": "sgd", "lr": 1e6}
    models = [TASK.build_model(seed) for seed in range(3)]
    batches = _batches(range(3), 40)
    with_wild = _stacked(models, [good, wild, good], batches)
    calm = _stacked(models, [good, good, good], batches)
    assert not torch.isfinite(with_wild[:, 1]).all()
    # Rows are computed independently: the neighbours are bit for bit what they were.
    assert torch.equal(with_wild[:, [0, 2]], calm[:, [0, 2]])


def test_models_that_leave_do_not_change_the_others() -> None:
    configs: list[dict[str, Scalar]] = [
        {"optimizer": "adam", "lr": 3e-3},
        {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
        {"optimizer": "radam", "lr": 3e-3, "beta2": 0.95, "lr_decay": "cosine"},
    ]
    models = [TASK.build_model(seed) for seed in range(3)]
    batches = _batches(range(3), 60)
    stack = ModelStack(models, configs, STEPS, CPU)
    early = [stack.step([b[step] for b in batches]) for step in range(30)]
    stack.keep([0, 2])  # the SGD trial was pruned
    late = [stack.step([batches[0][step], batches[2][step]]) for step in range(30, 60)]
    ours = torch.cat([torch.stack(early)[:, [0, 2]], torch.stack(late)])
    for column, row in enumerate((0, 2)):
        theirs = _sequential(models[row], configs[row], batches[row])
        _assert_close(ours[:, column].tolist(), theirs, f"row {row}")
    out = stack.export(1, TASK.build_model(99))
    alone = ModelStack([models[2]], [configs[2]], STEPS, CPU)
    for step in range(60):
        alone.step([batches[2][step]])
    expected = alone.export(0, TASK.build_model(98))
    for ours_p, theirs_p in zip(out.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(ours_p, theirs_p, rtol=1e-4, atol=1e-6)


def test_vectorised_rectification_is_the_reference_repos() -> None:
    beta1 = torch.tensor([0.9, 0.5, 0.0, 0.9, 0.99], dtype=torch.float64)
    beta2 = torch.tensor([0.999, 0.95, 0.9, 0.7, 0.5], dtype=torch.float64)
    for t in [1, 2, 4, 5, 6, 7, 10, 50, 1000]:
        rectified, step_size = radam_step_sizes(t, beta1, beta2)
        for m in range(len(beta1)):
            expected = radam_step_size(t, float(beta1[m]), float(beta2[m]))
            assert (bool(rectified[m]), float(step_size[m])) == expected


def test_stacking_settings_from_the_environment() -> None:
    assert Stacking.from_environment({}) == Stacking()
    assert not Stacking.from_environment({"HPS_STACK": "0"}).enabled
    assert Stacking.from_environment({"HPS_STACK_MAX_MODELS": "8"}).cpu_max_models == 8
    with pytest.raises(ValueError, match="HPS_STACK_MAX_MODELS"):
        Stacking.from_environment({"HPS_STACK_MAX_MODELS": "0"})


def test_trials_per_batch_lease_from_the_environment() -> None:
    assert Stacking.from_environment({}).max_trials == 64
    assert Stacking.from_environment({"HPS_STACK_MAX_TRIALS": "3"}).max_trials == 3
    for bad in ("0", "65"):
        with pytest.raises(ValueError, match="HPS_STACK_MAX_TRIALS must be 1 to 64"):
            Stacking.from_environment({"HPS_STACK_MAX_TRIALS": bad})
