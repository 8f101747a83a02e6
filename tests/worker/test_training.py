"""The lockstep trainer: it learns, reports, is deterministic, and records divergence as data."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from api_schemas import PostLNTransformer, SortTaskConfig, TrialAssignment
from api_schemas.search_space import Scalar
from tests.worker.assignments import assignment
from worker.training import TrialInterrupted, TrialOutcome, TrialTimeLimit, train_trial
from worker.workloads import build_task

CPU = torch.device("cpu")
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
CHANCE = math.log(TINY.vocab)


def _assignment(
    params: dict[str, Scalar] | None = None,
    *,
    seeds: list[int] | None = None,
    workload: Any = None,
    time_limit_s: float = 600.0,
) -> TrialAssignment:
    return assignment(
        params if params is not None else {"optimizer": "adam", "lr": 3e-3},
        workload if workload is not None else PostLNTransformer(config=TINY),
        seeds if seeds is not None else [0, 1],
        time_limit_s=time_limit_s,
    )


def _run(
    assignment: TrialAssignment, **kwargs: Any
) -> tuple[TrialOutcome, list[tuple[int, float]]]:
    reports: list[tuple[int, float]] = []

    def report(step: int, value: float) -> bool:
        reports.append((step, value))
        return False

    return train_trial(
        assignment, device=CPU, report=kwargs.pop("report", report), **kwargs
    ), reports


def test_tiny_trial_learns_and_reports() -> None:
    outcome, reports = _run(_assignment())
    assert outcome.state == "completed"
    assert [step for step, _ in reports] == [10, 20, 30, 40]
    assert all(math.isfinite(value) and value > 0 for _, value in reports)
    assert [s.seed for s in outcome.seeds] == [0, 1]
    for seed in outcome.seeds:
        assert seed.steps == 40
        assert not seed.diverged
        assert seed.loss < CHANCE
        assert seed.accuracy is not None and 1 / TINY.vocab < seed.accuracy <= 1
    assert outcome.steps_per_second > 0
    assert outcome.wall_time_s > 0


def test_reports_at_the_last_step_when_report_every_does_not_divide_steps() -> None:
    config = TINY.model_copy(update={"steps": 25})
    _, reports = _run(_assignment(seeds=[0], workload=PostLNTransformer(config=config)))
    assert [step for step, _ in reports] == [10, 20, 25]


def test_same_assignment_gives_identical_results() -> None:
    first = _run(_assignment())
    second = _run(_assignment())
    assert first[1] == second[1]
    assert first[0].seeds == second[0].seeds


def test_seed_is_the_same_run_whatever_the_other_seeds() -> None:
    # Alone, seed 5 trains sequentially; among others, stacked: the same run to float rounding
    # (bitwise when the seed list, and so the path and the stack, is the same: test above).
    alone, _ = _run(_assignment(seeds=[5]))
    with_others, _ = _run(_assignment(seeds=[7, 5, 3]))
    assert alone.path == "sequential" and with_others.path == "stacked"
    ours, theirs = with_others.seeds[1], alone.seeds[0]
    assert (ours.seed, ours.steps, ours.diverged) == (theirs.seed, theirs.steps, theirs.diverged)
    assert ours.loss == pytest.approx(theirs.loss, rel=1e-5)
    assert ours.accuracy == pytest.approx(theirs.accuracy, abs=2e-3)


def test_seed_fixes_initial_weights_and_batches_without_touching_global_rng() -> None:
    task = build_task(PostLNTransformer(config=TINY))
    rng_before = torch.get_rng_state()
    first = task.build_model(3).state_dict()
    task.build_model(4)
    again = task.build_model(3).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(torch.equal(first[name], again[name]) for name in first)
    other = task.build_model(4).state_dict()
    assert not torch.equal(first["head.weight"], other["head.weight"])

    x, y = next(task.train_batches(3))
    x_again, _ = next(task.train_batches(3))
    assert torch.equal(x, x_again)
    assert torch.equal(y, x.sort(dim=1).values)
    assert not torch.equal(x, next(task.train_batches(4))[0])
    assert not torch.equal(task.eval_batches(3)[0][0], x)  # held out: not a training batch
    assert all(
        torch.equal(a[0], b[0])
        for a, b in zip(task.eval_batches(3), task.eval_batches(3), strict=True)
    )


@pytest.mark.parametrize(
    "params", [{"optimizer": "sgd", "lr": 1e3}, {"optimizer": "adam", "lr": 10.0}]
)
def test_huge_lr_diverges_as_data(params: dict[str, Scalar]) -> None:
    outcome, reports = _run(_assignment(params))
    assert outcome.state == "completed"
    assert all(math.isfinite(value) for _, value in reports)
    for seed in outcome.seeds:
        assert seed.diverged
        assert seed.loss == CHANCE
        assert seed.accuracy == 1 / TINY.vocab


def test_collapse_to_chance_counts_as_diverged() -> None:
    # An lr this small leaves the model at its initial weights: held-out loss at chance.
    outcome, _ = _run(_assignment({"optimizer": "adam", "lr": 1e-12}, seeds=[0]))
    (seed,) = outcome.seeds
    assert seed.diverged
    assert seed.loss == CHANCE
    assert seed.steps == TINY.steps


def test_prune_stops_training_and_evaluates() -> None:
    reports: list[int] = []

    def prune(step: int, value: float) -> bool:
        reports.append(step)
        return True

    outcome, _ = _run(_assignment(), report=prune)
    assert outcome.state == "pruned"
    assert reports == [10]
    assert [seed.steps for seed in outcome.seeds] == [10, 10]
    assert all(math.isfinite(seed.loss) and seed.loss <= CHANCE for seed in outcome.seeds)


def test_should_stop_interrupts() -> None:
    calls = itertools.count()
    with pytest.raises(TrialInterrupted):
        _run(_assignment(), should_stop=lambda: next(calls) >= 5)


def test_time_limit() -> None:
    ticks = itertools.count(step=1.0)  # every clock read is one second later
    with pytest.raises(TrialTimeLimit):
        _run(_assignment(time_limit_s=20.0), clock=lambda: next(ticks))


def test_compile_trains_the_same_model_through_torch_compile() -> None:
    # A real compile (Inductor, C++ on the CPU) of the tiny model: the run must go through a
    # compiled graph and land where the eager run does, up to float reassociation.
    torch._dynamo.reset()
    config = TINY.model_copy(update={"steps": 10, "report_every": 5, "compile": True})
    compiled, compiled_reports = _run(
        _assignment(seeds=[0], workload=PostLNTransformer(config=config))
    )
    eager, eager_reports = _run(
        _assignment(
            seeds=[0],
            workload=PostLNTransformer(config=config.model_copy(update={"compile": False})),
        )
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert [step for step, _ in compiled_reports] == [step for step, _ in eager_reports]
    for (_, ours), (_, theirs) in zip(compiled_reports, eager_reports, strict=True):
        assert ours == pytest.approx(theirs, rel=1e-3)
    assert compiled.seeds[0].loss == pytest.approx(eager.seeds[0].loss, rel=1e-3)
