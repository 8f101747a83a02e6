"""The workload contract, run against every registered workload, built-in or plugin.

A workload must train for a few steps on the CPU, report finite values, give the same run for the
same seed (initial weights, data order, held-out batches) and a different one for another seed.
The plugin in ``tests/plugins`` is registered by entry point, exactly as a third party would.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter

from api_schemas import TrialAssignment
from api_schemas.workloads import WORKLOAD_NAMES, Workload
from tests.worker.assignments import assignment
from worker.training import train_trial
from worker.workloads import ENTRY_POINT_GROUP, UnknownWorkload, build_task, registered

PLUGINS = Path(__file__).parents[1] / "plugins"
PLUGIN = "example.parity"
CPU = torch.device("cpu")
WORKLOAD = TypeAdapter(Workload)


def _with_example_plugin() -> list[str]:
    sys.path.insert(0, str(PLUGINS))
    try:
        return registered()
    finally:
        sys.path.remove(str(PLUGINS))


@pytest.fixture
def example_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))


def _workload(name: str, **config: Any) -> Workload:
    small = {"steps": 6, "report_every": 3, "batch_size": 8}
    return WORKLOAD.validate_python({"name": name, "config": small | config})


def _assignment(workload: Workload, seeds: list[int]) -> TrialAssignment:
    return assignment({"optimizer": "adam", "lr": 1e-3}, workload, seeds)


def _state(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def _first_batches(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], n: int) -> list[Any]:
    return [next(batches) for _ in range(n)]


def _same(a: Any, b: Any) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _all_same(batches: list[Any], others: list[Any]) -> bool:
    return all(_same(a, b) for a, b in zip(batches, others, strict=True))


def test_every_builtin_and_the_example_plugin_are_registered() -> None:
    assert registered()[: len(WORKLOAD_NAMES)] == list(WORKLOAD_NAMES)
    assert PLUGIN not in registered()  # not installed until its directory is on the path
    assert PLUGIN in _with_example_plugin()


@pytest.mark.usefixtures("example_plugin")
@pytest.mark.parametrize("name", _with_example_plugin())
def test_workload_contract(name: str) -> None:
    workload = _workload(name)
    task = build_task(workload)
    assert task.chance_loss > 0 and 0 < task.chance_accuracy <= 1

    # Paired seeds: seed i is the same run whenever it is built, and another seed is not.
    assert _same(_state(task.build_model(0)), _state(task.build_model(0)))
    assert not _same(_state(task.build_model(0)), _state(task.build_model(1)))
    first = _first_batches(task.train_batches(0), 3)
    assert _all_same(first, _first_batches(task.train_batches(0), 3))
    assert not _all_same(first, _first_batches(task.train_batches(1), 3))
    assert _all_same(task.eval_batches(0), task.eval_batches(0))

    reports: list[tuple[int, float]] = []
    outcome = train_trial(
        _assignment(workload, [0, 1]),
        device=CPU,
        report=lambda step, value: reports.append((step, value)) is not None,
    )
    assert outcome.state == "completed"
    assert outcome.path == "stacked"  # every workload here qualifies (README: the contract)
    assert [step for step, _ in reports] == [3, 6]
    assert all(math.isfinite(value) for _, value in reports)
    for seed in outcome.seeds:
        assert seed.steps == 6
        assert math.isfinite(seed.loss) and 0 <= seed.loss <= task.chance_loss
        assert seed.accuracy is not None and 0 <= seed.accuracy <= 1

    again: list[tuple[int, float]] = []
    repeat = train_trial(
        _assignment(workload, [0, 1]),
        device=CPU,
        report=lambda step, value: again.append((step, value)) is not None,
    )
    assert again == reports  # bitwise: the same floats, not merely close ones
    assert repeat.seeds == outcome.seeds


def test_a_plugin_that_is_not_installed_is_a_clear_error() -> None:
    with pytest.raises(UnknownWorkload, match=ENTRY_POINT_GROUP) as error:
        build_task(_workload(PLUGIN))
    assert "digits_mlp" in str(error.value)  # it lists what this worker does have


@pytest.mark.usefixtures("example_plugin")
def test_a_plugin_refusing_its_config_raises_its_own_message() -> None:
    with pytest.raises(ValueError, match="bits must be between 1 and 20"):
        build_task(_workload(PLUGIN, bits=99))


def test_digits_held_out_images_are_the_same_for_every_seed() -> None:
    task = build_task(_workload("digits_mlp"))
    (images, labels), *rest = task.eval_batches(0)
    assert not rest
    assert images.shape == (359, 64) and labels.shape == (359,)
    assert _same(task.eval_batches(0)[0], task.eval_batches(7)[0])
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert set(labels.tolist()) == set(range(10))
