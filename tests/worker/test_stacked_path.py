"""The worker's choice of path: stacked when the model qualifies, sequential otherwise, and the
same results either way (divergence, collapse and pruning recorded alike)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from api_schemas import PostLNTransformer, SortTaskConfig
from api_schemas.search_space import Scalar
from api_schemas.workloads import Workload
from tests.worker.assignments import assignment
from worker.stacked import Stacking, probe
from worker.training import TrialOutcome, train_trial
from worker.workloads import Task, build_task

CPU = torch.device("cpu")
PLUGINS = Path(__file__).parents[1] / "plugins"
TINY = SortTaskConfig(
    seq_len=8,
    vocab=8,
    n_layers=1,
    d_model=16,
    n_heads=2,
    dim_feedforward=32,
    batch_size=16,
    steps=40,
    report_every=10,
)
SEQUENTIAL = Stacking(enabled=False)
STACKED = Stacking()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(
    params: dict[str, Scalar],
    seeds: list[int],
    *,
    workload: Any = None,
    stacking: Stacking = STACKED,
) -> tuple[TrialOutcome, list[tuple[int, float]]]:
    reports: list[tuple[int, float]] = []
    trial = assignment(params, workload or PostLNTransformer(config=TINY), seeds)
    outcome = train_trial(
        trial,
        device=CPU,
        report=lambda step, value: reports.append((step, value)) is not None,
        stacking=stacking,
    )
    return outcome, reports


def _assert_same_trial(
    ours: tuple[TrialOutcome, list[tuple[int, float]]],
    theirs: tuple[TrialOutcome, list[tuple[int, float]]],
) -> None:
    (outcome, reports), (expected, expected_reports) = ours, theirs
    assert outcome.state == expected.state
    assert [s for s, _ in reports] == [s for s, _ in expected_reports]
    for (_, a), (_, b) in zip(reports, expected_reports, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    for seed, other in zip(outcome.seeds, expected.seeds, strict=True):
        assert (seed.seed, seed.diverged, seed.steps) == (other.seed, other.diverged, other.steps)
        assert seed.loss == pytest.approx(other.loss, rel=1e-5)
        assert seed.accuracy == pytest.approx(other.accuracy, abs=2e-3)  # a token may flip


@pytest.mark.parametrize(
    "params",
    [
        {"optimizer": "adam", "lr": 3e-3},
        {"optimizer": "radam_reference", "lr": 3e-3, "lr_decay": "cosine"},
        {"optimizer": "sgd", "lr": 1e3},  # diverges: non-finite
        {"optimizer": "adam", "lr": 10.0},  # diverges: explodes
        {"optimizer": "adam", "lr": 1e-12},  # collapses: held-out loss at chance
    ],
)
def test_stacked_trial_records_what_the_sequential_trial_records(
    params: dict[str, Scalar], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hps.worker"):
        stacked = _train(params, [0, 1, 2])
    sequential = _train(params, [0, 1, 2], stacking=SEQUENTIAL)
    assert stacked[0].path == "stacked" and sequential[0].path == "sequential"
    assert "stacked: 3 seeds stacked" in caplog.text
    _assert_same_trial(stacked, sequential)


def test_a_diverging_seed_leaves_the_stack_and_the_others_train_on() -> None:
    # At this lr, of the tiny model's seeds 0-5, three explode by step 30 and the others run to
    # the end: the stack shrinks at the report that finds them, as the sequential runs stop.
    # The lr is so high that every run amplifies rounding (reports differ by a few percent
    # between the paths); which seeds explode, and when, does not. Whether a seed that runs to
    # the end lands above or below the collapse line can (seed 0 ends at 0.88 x chance stacked
    # and at 0.9 sequentially on some CPUs), so that is not compared here: the paths' losses at
    # sane lrs are, to 1e-5 (tests/worker/test_stacked.py).
    params: dict[str, Scalar] = {"optimizer": "sgd", "lr": 1.0, "momentum": 0.9}
    stacked, _ = _train(params, list(range(6)))
    sequential, _ = _train(params, list(range(6)), stacking=SEQUENTIAL)
    full = max(s.steps for s in sequential.seeds)
    assert [s.steps for s in stacked.seeds] == [s.steps for s in sequential.seeds]
    exploded = [s.steps < full for s in stacked.seeds]
    assert sum(exploded) == 3 and not all(exploded), [s.steps for s in stacked.seeds]
    for seed, other, left in zip(stacked.seeds, sequential.seeds, exploded, strict=True):
        if left:  # recorded as diverged at the chance loss, on both paths alike
            assert seed.diverged and other.diverged
            assert seed.loss == pytest.approx(other.loss, rel=1e-6)


def test_stacks_of_a_few_models_train_in_lockstep(caplog: pytest.LogCaptureFixture) -> None:
    params: dict[str, Scalar] = {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1}
    with caplog.at_level(logging.INFO, logger="hps.worker"):
        chunked = _train(params, [0, 1, 2, 3, 4], stacking=Stacking(cpu_max_models=2))
    assert "3 stacks of <= 2" in caplog.text
    _assert_same_trial(chunked, _train(params, [0, 1, 2, 3, 4]))


def test_pruned_stacked_trial_stops_and_evaluates() -> None:
    trial = assignment({"optimizer": "adam", "lr": 3e-3}, PostLNTransformer(config=TINY), [0, 1])
    outcome = train_trial(trial, device=CPU, report=lambda step, value: True)
    assert outcome.path == "stacked" and outcome.state == "pruned"
    assert [seed.steps for seed in outcome.seeds] == [10, 10]


def test_one_seed_or_stacking_off_trains_sequentially(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hps.worker"):
        assert _train({"optimizer": "adam", "lr": 1e-3}, [3])[0].path == "sequential"
        assert "one seed" in caplog.text
        off = _train({"optimizer": "adam", "lr": 1e-3}, [3, 4], stacking=SEQUENTIAL)
        assert off[0].path == "sequential"
        assert "stacking is off" in caplog.text


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


@pytest.mark.usefixtures("example_plugin")
@pytest.mark.parametrize(("norm", "path"), [("none", "stacked"), ("batch", "sequential")])
def test_a_plugin_model_with_batchnorm_trains_sequentially(
    norm: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    workload = TypeAdapter(Workload).validate_python(
        {
            "name": "example.parity",
            "config": {"steps": 6, "report_every": 3, "batch_size": 16, "norm": norm},
        }
    )
    with caplog.at_level(logging.INFO, logger="hps.worker"):
        outcome, _ = _train({"optimizer": "adam", "lr": 1e-2}, [0, 1], workload=workload)
    assert outcome.path == path
    assert outcome.state == "completed" and all(s.steps == 6 for s in outcome.seeds)
    if path == "sequential":
        assert "BatchNorm with running statistics" in caplog.text


class _Branchy(nn.Module):
    """A model whose forward pass branches on its data: vmap cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out if x.sum() > 0 else -out


def _task(model: type[nn.Module]) -> Task:
    def batches(seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        while True:
            x = torch.randn(8, 4, generator=generator)
            yield x, (x[:, 0] > 0).long()

    return Task(
        build_model=lambda seed: model(),
        train_batches=batches,
        eval_batches=lambda seed: [next(batches(seed + 1000))],
        chance_loss=math.log(2),
        chance_accuracy=0.5,
    )


def test_data_dependent_control_flow_is_refused_by_the_probe() -> None:
    found = probe(_task(_Branchy), [0, 1], CPU, autocast=False)
    assert found.reason is not None and "vmap over functional_call fails" in found.reason


def test_frozen_parameters_are_refused_by_the_probe() -> None:
    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)
            self.linear.bias.requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.linear(x)
            return out

    found = probe(_task(Frozen), [0, 1], CPU, autocast=False)
    assert found.reason == "the model has frozen parameters"


def test_every_builtin_model_qualifies() -> None:
    task = build_task(PostLNTransformer(config=TINY))
    assert probe(task, [0, 1], CPU, autocast=False).reason is None
