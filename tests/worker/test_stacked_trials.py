"""Trials of one workload trained as one stack: each trial's seeds give the runs they give when
the trial trains alone, whatever trials of other parameters share the stack, and a trial that is
pruned, loses its lease or diverges leaves the others' runs as they were."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest
import torch

from api_schemas import PostLNTransformer, SortTaskConfig, TrialAssignment
from api_schemas.search_space import Scalar
from tests.worker.assignments import assignment
from worker.stacked import Stacking
from worker.training import (
    TrialInterrupted,
    TrialOutcome,
    TrialRun,
    TrialTimeLimit,
    train_trials,
)

CPU = torch.device("cpu")
TINY = PostLNTransformer(
    config=SortTaskConfig(
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
)
RTOL = 1e-5
PARAMS: list[dict[str, Scalar]] = [
    {"optimizer": "adam", "lr": 3e-3, "warmup_schedule": "linear", "warmup_steps": 10},
    {"optimizer": "radam", "lr": 1e-2, "beta2": 0.95, "lr_decay": "cosine"},
    {"optimizer": "adam", "lr": 1e-3, "warmup_schedule": "untuned_linear", "beta2": 0.9},
]
"""Trials of different optimizers, lrs and warmups, as a grid study's batch holds them."""
SEEDS = [0, 1, 2]
STACKED = Stacking()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trial(trial_id: int, params: dict[str, Scalar], seeds: list[int] = SEEDS) -> TrialAssignment:
    return assignment(params, TINY, seeds).model_copy(update={"trial_id": trial_id})


Reports = dict[int, list[tuple[int, float]]]


def _train(
    trials: Sequence[TrialAssignment],
    *,
    stacking: Stacking = STACKED,
    answer: Callable[[int, int], bool] = lambda trial_id, step: False,
    stop: Callable[[int], bool] = lambda trial_id: False,
) -> tuple[list[TrialOutcome | Exception], Reports]:
    """Train ``trials`` together; ``answer(trial_id, step)`` is the service's prune decision
    (an exception it raises is the report's), ``stop(trial_id)`` the trial's own stop."""
    reports: Reports = {t.trial_id: [] for t in trials}

    def run(trial: TrialAssignment) -> TrialRun:
        def report(step: int, value: float) -> bool:
            reports[trial.trial_id].append((step, value))
            return answer(trial.trial_id, step)

        return TrialRun(trial, report, should_stop=lambda: stop(trial.trial_id))

    trained = train_trials([run(t) for t in trials], device=CPU, stacking=stacking)
    return trained.ends, reports


def _outcome(end: TrialOutcome | Exception) -> TrialOutcome:
    assert isinstance(end, TrialOutcome), end
    return end


def _assert_same_run(
    ours: TrialOutcome | Exception,
    theirs: TrialOutcome | Exception,
    our_reports: list[tuple[int, float]],
    their_reports: list[tuple[int, float]],
) -> None:
    a, b = _outcome(ours), _outcome(theirs)
    assert a.state == b.state
    assert [s for s, _ in our_reports] == [s for s, _ in their_reports]
    for (_, x), (_, y) in zip(our_reports, their_reports, strict=True):
        assert x == pytest.approx(y, rel=RTOL)
    assert len(a.seeds) == len(b.seeds)
    for seed, other in zip(a.seeds, b.seeds, strict=True):
        assert (seed.seed, seed.diverged, seed.steps) == (other.seed, other.diverged, other.steps)
        assert seed.loss == pytest.approx(other.loss, rel=RTOL)
        assert seed.accuracy == pytest.approx(other.accuracy, abs=2e-3)  # a token may flip


@pytest.fixture(scope="module")
def alone() -> dict[int, tuple[TrialOutcome | Exception, list[tuple[int, float]]]]:
    """Each trial trained on its own (its seeds stacked), the reference for the tests."""
    out = {}
    for trial_id, params in enumerate(PARAMS, start=1):
        (end,), reports = _train([_trial(trial_id, params)])
        out[trial_id] = (end, reports[trial_id])
    return out


def _batch() -> list[TrialAssignment]:
    return [_trial(trial_id, params) for trial_id, params in enumerate(PARAMS, start=1)]


@pytest.mark.parametrize("models_per_stack", [64, 4], ids=["one stack", "stacks across trials"])
def test_each_trial_in_a_stack_of_trials_is_the_run_it_is_alone(
    alone: dict[int, tuple[TrialOutcome | Exception, list[tuple[int, float]]]],
    models_per_stack: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="hps.worker"):
        ends, reports = _train(_batch(), stacking=Stacking(cpu_max_models=models_per_stack))
    stacks = 1 if models_per_stack == 64 else 3
    assert f"trials 1, 2, 3: stacked: 3 trials' 9 seeds stacked ({stacks} stack" in caplog.text
    for trial_id, end in enumerate(ends, start=1):
        assert _outcome(end).path == "stacked"
        _assert_same_run(end, alone[trial_id][0], reports[trial_id], alone[trial_id][1])
    # Different parameters, different runs: the rows did not train under one trial's settings.
    losses = {round(_outcome(end).seeds[0].loss, 4) for end in ends}
    assert len(losses) == 3


def test_a_pruned_trial_leaves_the_stack_and_the_others_train_on(
    alone: dict[int, tuple[TrialOutcome | Exception, list[tuple[int, float]]]],
) -> None:
    ends, reports = _train(_batch(), answer=lambda trial_id, step: trial_id == 2 and step == 20)
    pruned = _outcome(ends[1])
    assert pruned.state == "pruned"
    assert [s.steps for s in pruned.seeds] == [20, 20, 20]
    assert [s for s, _ in reports[2]] == [10, 20]
    # Its seeds are evaluated as they stood at step 20: what the trial pruned alone gives.
    (end,), by_itself = _train([_trial(2, PARAMS[1])], answer=lambda trial_id, step: step == 20)
    _assert_same_run(pruned, end, reports[2], by_itself[2])
    for trial_id in (1, 3):
        end = ends[trial_id - 1]
        _assert_same_run(end, alone[trial_id][0], reports[trial_id], alone[trial_id][1])


class LeaseLost(Exception):
    pass


def test_a_trial_whose_lease_is_lost_is_dropped_and_the_others_train_on(
    alone: dict[int, tuple[TrialOutcome | Exception, list[tuple[int, float]]]],
) -> None:
    def answer(trial_id: int, step: int) -> bool:
        if trial_id == 1 and step == 20:
            raise LeaseLost("409: the lease is another worker's now")
        return False

    # Trial 3's heartbeat is refused just before step 31: it stops mid-window.
    steps_seen = {3: 0}

    def stop(trial_id: int) -> bool:
        if trial_id != 3:
            return False
        steps_seen[3] += 1
        return steps_seen[3] > 30

    ends, reports = _train(_batch(), answer=answer, stop=stop)
    assert isinstance(ends[0], LeaseLost)
    assert isinstance(ends[2], TrialInterrupted)
    assert [s for s, _ in reports[1]] == [10, 20] and [s for s, _ in reports[3]] == [10, 20, 30]
    _assert_same_run(ends[1], alone[2][0], reports[2], alone[2][1])


def test_a_diverging_trial_stays_in_its_own_rows(
    alone: dict[int, tuple[TrialOutcome | Exception, list[tuple[int, float]]]],
) -> None:
    wild = _trial(9, {"optimizer": "sgd", "lr": 1e3})
    ends, reports = _train([_trial(1, PARAMS[0]), wild, _trial(3, PARAMS[2])])
    diverged = _outcome(ends[1])
    assert diverged.state == "completed" and all(s.diverged for s in diverged.seeds)
    assert [s.steps for s in diverged.seeds] == [10, 10, 10]
    assert len(reports[9]) == 1  # every seed diverged: the trial stopped
    for position, trial_id in ((0, 1), (2, 3)):
        end = ends[position]
        _assert_same_run(end, alone[trial_id][0], reports[trial_id], alone[trial_id][1])


def test_each_trial_has_its_own_seeds_and_time_limit() -> None:
    # Different seed lists stack too; a trial past its own time limit ends, the other goes on.
    short = _trial(1, PARAMS[0], seeds=[4]).model_copy(update={"time_limit_s": -1.0})
    ends, reports = _train([short, _trial(2, PARAMS[1], seeds=[5, 6])])
    assert isinstance(ends[0], TrialTimeLimit) and reports[1] == []
    (end,), alone = _train([_trial(2, PARAMS[1], seeds=[5, 6])])
    _assert_same_run(ends[1], end, reports[2], alone[2])


def test_trials_that_cannot_stack_train_one_by_one_in_lockstep(
    alone: dict[int, tuple[TrialOutcome | Exception, list[tuple[int, float]]]],
) -> None:
    ends, reports = _train(
        _batch(),
        stacking=Stacking(enabled=False),
        answer=lambda trial_id, step: trial_id == 2 and step == 20,
    )
    assert [_outcome(e).path for e in ends] == ["sequential"] * 3
    assert _outcome(ends[1]).state == "pruned"
    for trial_id in (1, 3):
        end = ends[trial_id - 1]
        _assert_same_run(end, alone[trial_id][0], reports[trial_id], alone[trial_id][1])


def test_trials_of_different_workloads_are_refused() -> None:
    other = PostLNTransformer(config=TINY.config.model_copy(update={"steps": 20}))
    trials = [_trial(1, PARAMS[0]), _trial(2, PARAMS[0]).model_copy(update={"workload": other})]
    with pytest.raises(ValueError, match="share one workload"):
        _train(trials)
