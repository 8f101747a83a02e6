"""The storage seam's contract (``service.store.Store``), on SQLite and on PostgreSQL.

In the style of Optuna's own ``StorageTestCase``: each test drives the seam directly (no HTTP)
and reads the outcome back through Optuna's *public* API, so that what hps writes behind
Optuna's back (trials, parameters, values, states in hps's transactions) is exactly what Optuna
itself would have written. An Optuna upgrade that changes its tables or its row writers fails
here first. The last test holds the seam to its promise: no private Optuna name elsewhere.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from api_schemas import StudySpec
from service.errors import RefusedValue
from service.sampling import sample
from service.store import Lease, Store, TrialTable, trial_id_of
from tests.service.conftest import study_spec

pytestmark = pytest.mark.backends

REPO = Path(__file__).resolve().parents[2]
SPEC = StudySpec.model_validate(study_spec(n_trials=3))
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(database_url)
    yield store
    store.close()


def new_study(store: Store) -> tuple[int, optuna.Study]:
    study = store.create_optuna_study(f"contract-{id(store)}", SPEC)
    return store.study_id_of(study), study


def public_trials(store: Store, study: optuna.Study) -> list[FrozenTrial]:
    """The trials as a fresh Optuna process reads them (no cache of ours involved)."""
    return optuna.load_study(
        study_name=study.study_name, storage=store.engine.url.render_as_string(hide_password=False)
    ).get_trials()


def start(store: Store, study_id: int, study: optuna.Study, **attrs: object) -> int:
    with store.transaction(serial=True, study_id=study_id) as session:
        return start_in(session, store, study_id, study, attrs or {"worker_id": "w:1"})


def start_in(
    session: Session,
    store: Store,
    study_id: int,
    study: optuna.Study,
    attrs: Mapping[str, object],
    spec: StudySpec = SPEC,
) -> int:
    """One trial started in ``session``, as a lease (or each trial of a batch) starts it."""
    trial = store.next_trial(session, study_id)
    assert trial is not None
    with store.sampling(study, trial, session) as drawing:
        sample(drawing, trial, spec)
    return store.start_trial(session, study_id, trial, attrs)


def test_a_started_trial_is_what_optunas_ask_and_suggest_store(store: Store) -> None:
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study, worker_id="w:1", attempt=1)
    (stored,) = public_trials(store, study)
    assert trial_id_of(stored) == trial_id
    assert (stored.number, stored.state) == (0, TrialState.RUNNING)
    assert stored.datetime_start is not None and stored.datetime_complete is None
    assert set(stored.params) == {"optimizer", "lr"}
    assert stored.distributions == {
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
    }
    assert stored.user_attrs == {"worker_id": "w:1", "attempt": 1}
    # Numbers follow the study's trials, as Optuna numbers them.
    start(store, study_id, study)
    assert [t.number for t in public_trials(store, study)] == [0, 1]


def test_a_step_that_raises_writes_nothing(store: Store) -> None:
    study_id, study = new_study(store)
    with pytest.raises(RuntimeError), store.transaction(serial=True, study_id=study_id) as session:
        start_in(session, store, study_id, study, {"worker_id": "w:1"})
        raise RuntimeError("killed")
    assert public_trials(store, study) == []
    assert store.trial_counts(study_id).counted == 0


def test_trials_started_in_one_transaction_are_numbered_and_written_together(
    store: Store,
) -> None:
    study_id, study = new_study(store)
    with store.transaction(serial=True, study_id=study_id) as session:
        ids = [start_in(session, store, study_id, study, {"worker_id": "w:1"}) for _ in range(3)]
        assert store.trial_counts(study_id, session).running == 3
        assert store.trial_counts(study_id).running == 0  # not committed: others see none
    stored = public_trials(store, study)
    assert [(trial_id_of(t), t.number, t.state) for t in stored] == [
        (ids[0], 0, TrialState.RUNNING),
        (ids[1], 1, TrialState.RUNNING),
        (ids[2], 2, TrialState.RUNNING),
    ]
    with pytest.raises(RuntimeError), store.transaction(serial=True, study_id=study_id) as session:
        for _ in range(3):
            start_in(session, store, study_id, study, {"worker_id": "w:2"})
        raise RuntimeError("killed after the third")
    assert len(public_trials(store, study)) == 3  # none of the second batch


def test_the_sampler_sees_the_trials_its_transaction_started_as_stored(store: Store) -> None:
    """What Optuna's samplers read (``get_all_trials``) during a batch's later draws: the
    trials started earlier in the transaction, as a fresh read will show them once committed."""
    study_id, study = new_study(store)
    start(store, study_id, study)  # committed before
    with store.transaction(serial=True, study_id=study_id) as session:
        start_in(session, store, study_id, study, {"worker_id": "w:1"})
        trial = store.next_trial(session, study_id)
        assert trial is not None
        with store.sampling(study, trial, session) as drawing:
            seen = drawing.get_trials(deepcopy=False)
            running = drawing.get_trials(states=(TrialState.RUNNING,))
            done = drawing.get_trials(states=(TrialState.COMPLETE,))
        with store.sampling(study, trial) as drawing:
            outside = drawing.get_trials()
    assert [t.number for t in seen] == [t.number for t in running] == [0, 1]
    assert done == [] and [t.number for t in outside] == [0]
    assert [repr(t) for t in running] == [repr(t) for t in public_trials(store, study)]


def test_a_batch_takes_queued_trials_like_its_first(store: Store) -> None:
    study_id, _ = new_study(store)
    cells = [{"optimizer": o, "lr": 0.01} for o in ("adam", "sgd", "adam", "sgd")]
    store.enqueue_many(study_id, cells)
    with store.transaction(serial=True, study_id=study_id) as session:
        like = {"optimizer": "sgd"}
        first = store.next_trial(session, study_id, like=like)
        assert first is not None and first.number == 1
        store.start_trial(session, study_id, first, {})
        second = store.next_trial(session, study_id, like=like)
        assert second is not None and second.number == 3
        store.start_trial(session, study_id, second, {})
        # Queued trials are left, none like it: none (a new one would overrun the budget).
        assert store.next_trial(session, study_id, like=like) is None
        oldest = store.next_trial(session, study_id)
        assert oldest is not None and oldest.number == 0


def test_leases_are_read_and_locked_together(store: Store) -> None:
    study_id, study = new_study(store)
    ids = [start(store, study_id, study) for _ in range(3)]
    with store.transaction() as session:
        for trial_id in ids[:2]:
            store.add_lease(session, Lease(trial_id, study_id, "h", NOW))
    assert set(store.leases([*ids, 10_000])) == set(ids[:2])
    with store.transaction(serial=True, study_id=[study_id], lease_id=ids[::-1]) as session:
        assert store.lease(ids[0], session) is not None


def test_a_queued_trial_is_claimed_with_its_fixed_params(store: Store) -> None:
    study_id, study = new_study(store)
    with store.transaction(serial=True, study_id=study_id) as session:
        queued = store.enqueue(session, study_id, {"optimizer": "sgd", "lr": 0.01}, {"attempt": 2})
    (waiting,) = public_trials(store, study)
    assert waiting.state == TrialState.WAITING
    assert waiting.system_attrs["fixed_params"] == {"optimizer": "sgd", "lr": 0.01}
    assert store.trial_counts(study_id).waiting == 1
    trial_id = start(store, study_id, study, worker_id="w:2")
    assert trial_id == queued
    (running,) = public_trials(store, study)
    assert running.state == TrialState.RUNNING
    assert running.params == {"optimizer": "sgd", "lr": 0.01}
    assert running.user_attrs == {"attempt": 2, "worker_id": "w:2"}


def test_cells_queued_in_bulk_are_optunas_queued_trials_in_order(store: Store) -> None:
    study_id, study = new_study(store)
    cells = [{"optimizer": "adam", "lr": 0.001}, {"optimizer": "sgd", "lr": 0.01}]
    store.enqueue_many(study_id, cells)
    queued = public_trials(store, study)
    assert [(t.number, t.state) for t in queued] == [
        (0, TrialState.WAITING),
        (1, TrialState.WAITING),
    ]
    assert [t.system_attrs["fixed_params"] for t in queued] == cells
    start(store, study_id, study)
    first, second = public_trials(store, study)
    assert (first.state, first.params) == (TrialState.RUNNING, cells[0])
    assert second.state == TrialState.WAITING


def test_a_trial_queued_by_the_seam_is_popped_by_optunas_own_ask(store: Store) -> None:
    study_id, study = new_study(store)
    with store.transaction(serial=True, study_id=study_id) as session:
        store.enqueue(session, study_id, {"optimizer": "adam", "lr": 0.001}, {})
    trial = study.ask()
    assert trial.suggest_categorical("optimizer", ["adam", "sgd"]) == "adam"
    assert trial.suggest_float("lr", 1e-4, 1e-1, log=True) == 0.001


@pytest.mark.parametrize(
    ("state", "value"),
    [(TrialState.COMPLETE, 0.25), (TrialState.PRUNED, None), (TrialState.FAIL, None)],
)
def test_finishing_writes_state_value_attributes_and_releases_the_lease(
    store: Store, state: TrialState, value: float | None
) -> None:
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study)
    lease = Lease(trial_id, study_id, "h", NOW + timedelta(seconds=60))
    with store.transaction() as session:
        store.add_lease(session, lease)
    study.get_trials()  # Optuna's cache has seen the trial running
    with store.transaction(serial=True, study_id=study_id, lease_id=trial_id) as session:
        store.finish_trial(session, store.trial(trial_id, session), state, value, {"seeds": [1, 2]})
    (done,) = public_trials(store, study)
    assert (done.state, done.value, done.user_attrs["seeds"]) == (state, value, [1, 2])
    assert done.datetime_complete is not None
    # The cache Optuna keeps in this process sees the end too (it re-reads unfinished trials).
    (cached,) = study.get_trials()
    assert (cached.state, cached.value) == (state, value)
    stored = store.lease(trial_id)
    assert stored is not None and stored.released
    # A finished trial is final, as in Optuna: a second end raises and writes nothing.
    with (
        pytest.raises(optuna.exceptions.UpdateFinishedTrialError),
        store.transaction(serial=True, study_id=study_id, lease_id=trial_id) as session,
    ):
        store.finish_trial(
            session, store.trial(trial_id, session), TrialState.COMPLETE, 9.0, {"seeds": []}
        )
    (again,) = public_trials(store, study)
    assert (again.state, again.value) == (state, value)


def test_an_intermediate_value_keeps_its_first_value_and_needs_a_running_trial(
    store: Store,
) -> None:
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study)
    with store.transaction() as session:
        assert store.record_intermediate_value(session, trial_id, 5, 1.5)
        assert store.record_intermediate_value(session, trial_id, 5, 9.0)
        assert store.record_intermediate_value(session, trial_id, 7, float("inf"))
    (trial,) = public_trials(store, study)
    assert trial.intermediate_values == {5: 1.5, 7: float("inf")}
    with store.transaction() as session:
        store.finish_trial(session, store.trial(trial_id, session), TrialState.PRUNED, None, {})
    with store.transaction() as session:
        assert not store.record_intermediate_value(session, trial_id, 9, 1.0)
    assert public_trials(store, study)[0].intermediate_values == {5: 1.5, 7: float("inf")}


def test_a_lease_renews_only_while_live_and_under_its_token(store: Store) -> None:
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study)
    expiry = NOW + timedelta(seconds=10)
    with store.transaction() as session:
        store.add_lease(session, Lease(trial_id, study_id, "h", expiry))
    later = expiry + timedelta(seconds=10)
    with store.transaction() as session:
        assert store.renew(session, trial_id, "other", NOW, later) is None
        renewed = store.renew(session, trial_id, "h", NOW, later)
        assert renewed is not None and renewed.expires_at == later
        assert store.renew(session, trial_id, "h", later, later + timedelta(seconds=1)) is None
    assert [lease.trial_id for lease in store.expired_leases(later)] == [trial_id]
    assert store.expired_leases(NOW) == []


def test_a_lease_on_a_trial_ended_without_the_service_is_not_renewed(store: Store) -> None:
    # The dashboard can fail a running trial through Optuna, leaving its lease unreleased.
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study)
    with store.transaction() as session:
        store.add_lease(session, Lease(trial_id, study_id, "h", NOW + timedelta(seconds=10)))
    store.optuna_storage.set_trial_state_values(trial_id, TrialState.FAIL)
    with store.transaction() as session:
        assert store.renew(session, trial_id, "h", NOW, NOW + timedelta(seconds=20)) is None


def test_retried_trials_do_not_count_towards_the_budget(store: Store) -> None:
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study)
    with store.transaction(serial=True, study_id=study_id) as session:
        store.finish_trial(
            session, store.trial(trial_id, session), TrialState.FAIL, None, {"retried": True}
        )
        store.enqueue(session, study_id, {"optimizer": "adam", "lr": 0.01}, {"attempt": 2})
    counts = store.trial_counts(study_id)
    assert (counts.counted, counts.running, counts.waiting) == (1, 0, 1)
    assert counts.has_work(1) and not counts.is_done(1)


def test_a_value_the_database_refuses_is_refused_value(store: Store, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores NUL characters")
    study_id, study = new_study(store)
    trial_id = start(store, study_id, study)
    lease = Lease(trial_id, study_id, "bad\x00hash", NOW)
    with pytest.raises(RefusedValue), store.transaction() as session:
        store.add_lease(session, lease)
    assert store.lease(trial_id) is None


PRIVATE = {
    "_storage",
    "_trial_id",
    "_study_id",
    "_thread_local",
    "_create_scoped_session",
    "_set_trial_attr_without_commit",
    "_set_trial_param_without_commit",
    "_set_trial_value_without_commit",
    "_get_prepared_new_trial",
    "_build_frozen_trial_from_trial_model",
    "_CachedStorage",
    "_StudyInfo",
    "_add_trials_to_cache",
}
SEAM = {REPO / "service" / "store.py", REPO / "service" / "sql.py"}
"""The storage seam: the store, and the statements it runs (built once, ``service.sql``)."""


def test_no_private_optuna_name_outside_the_seam() -> None:
    found = []
    for package in ("service", "hps", "worker"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path in SEAM:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                name = (
                    node.attr
                    if isinstance(node, ast.Attribute)
                    else node.name
                    if isinstance(node, ast.alias)
                    else None
                )
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if module and module.startswith("optuna") and "._" in module:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
                if name in PRIVATE:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not found, "\n".join(found)


def test_a_studys_trials_read_in_bulk_are_what_optunas_get_trials_gives(store: Store) -> None:
    study_id, study = new_study(store)
    ids = [start(store, study_id, study, worker_id=f"w:{i}", attempt=1) for i in range(4)]
    with store.transaction(serial=True, study_id=study_id) as session:
        for step, loss in ((5, 1.5), (10, float("inf")), (15, float("nan"))):
            store.record_intermediate_value(session, ids[1], step, loss)
        store.finish_trial(session, store.trial(ids[0], session), TrialState.COMPLETE, 0.25, {})
        store.finish_trial(session, store.trial(ids[1], session), TrialState.PRUNED, 1.5, {})
        store.finish_trial(
            session, store.trial(ids[2], session), TrialState.FAIL, None, {"retried": True}
        )
        store.enqueue(session, study_id, {"optimizer": "adam", "lr": 0.01}, {"attempt": 2})
    bulk = store.trials(study_id)
    expected = public_trials(store, study)
    assert [t.number for t in bulk] == [0, 1, 2, 3, 4]
    for ours, theirs in zip(bulk, expected, strict=True):
        assert repr(ours) == repr(theirs)  # NaN != NaN: compare what they hold, as text


def test_the_analysis_reads_of_a_study_are_what_optunas_get_trials_gives(store: Store) -> None:
    """``trial_table`` (what the analysis needs of each trial: queued ones' cells, the seeds,
    the failure, the retried mark) and ``curves`` (by trial id) read in SQL what Optuna's own
    trials hold."""
    study_id, study = new_study(store)
    ids = [start(store, study_id, study, worker_id=f"w:{i}", attempt=1) for i in range(4)]
    seeds = [{"seed": 0, "loss": 0.5, "diverged": False, "steps": 10}]
    failure = {"kind": "error", "message": "boom"}
    with store.transaction(serial=True, study_id=study_id) as session:
        store.record_intermediate_value(session, ids[0], 5, 0.75)
        for step, loss in ((5, 1.5), (10, float("inf")), (15, float("nan"))):
            store.record_intermediate_value(session, ids[1], step, loss)
        done = {"seeds": seeds, "worker_id": "w:0", "wall_time_s": 1.0}
        store.finish_trial(session, store.trial(ids[0], session), TrialState.COMPLETE, 0.5, done)
        store.finish_trial(session, store.trial(ids[1], session), TrialState.PRUNED, 1.5, {})
        failed = {"retried": True, "failure": failure}
        store.finish_trial(session, store.trial(ids[2], session), TrialState.FAIL, None, failed)
        store.enqueue(session, study_id, {"optimizer": "adam", "lr": 0.01}, {"attempt": 2})
    expected = public_trials(store, study)
    table = store.trial_table(study_id)
    assert table == TrialTable.of(expected)
    assert table.params[-1] == {"optimizer": "adam", "lr": 0.01}  # the queued cell
    assert table.attrs[0] == {"seeds": seeds} and table.attrs[2] == failed
    curves = store.curves([*ids, 10**9])
    assert sorted(curves) == ids[:2]  # a trial without a curve (or unknown) is absent
    by_id = {trial_id_of(t): t.intermediate_values for t in expected}
    assert repr(curves) == repr({i: by_id[i] for i in ids[:2]})  # NaN: compare as text
