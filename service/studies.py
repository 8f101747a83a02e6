"""Studies: create one from a spec, read them back with their trial counts and best trial."""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import optuna
from sqlalchemy import select

from api_schemas import StudyRead, StudySpec, StudyState, TrialCounts, TrialRead
from api_schemas.analysis import Analysis
from service import submit_keys
from service import trials as trial_views
from service.analysis import analyse_table
from service.errors import NotFound
from service.limits import SpecLimits
from service.models import StudyRow
from service.store import Store, TrialTable

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StudyHandle:
    """A study's immutable identity: what the domain needs to reach its Optuna study."""

    id: int
    name: str
    optuna_name: str
    spec: StudySpec
    created_at: datetime


class Studies:
    """The study half of the domain layer. Specs never change, so handles are cached."""

    def __init__(
        self, store: Store, clock: Clock = utc_now, *, limits: SpecLimits | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._limits = limits
        self._handles: dict[int, StudyHandle] = {}
        self._done: set[int] = set()
        self._newly_done: list[int] = []
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()

    def create(self, spec: StudySpec, *, idempotency_key: str | None = None) -> StudyRead:
        """Store ``spec``, create its Optuna study and, for a grid, enqueue every cell.

        A spec over the service's limits raises LimitExceeded and stores nothing. With
        ``idempotency_key``, a key seen before returns the study it created (``submit_keys``).
        """
        if idempotency_key is None:
            return self._create(spec, None)
        # A retry that arrives while its first attempt is still queueing cells waits for it
        # here, then finds its key. Two replicas racing on one key both create a study; the
        # key's claim (``submit_keys.claim``) picks one, and the other is deleted again.
        with self._submit_lock:
            with self._store.session() as session:
                known = submit_keys.find(session, idempotency_key, spec)
            if known is not None:
                return self.read(known)
            return self._create(spec, idempotency_key)

    def _create(self, spec: StudySpec, idempotency_key: str | None) -> StudyRead:
        if self._limits is not None:
            self._limits.check(spec)
        optuna_name, study = self._new_optuna_study(spec)
        if spec.sampler.type == "grid":
            self._store.enqueue_many(self._store.study_id_of(study), spec.grid())
        row = StudyRow(
            id=self._store.study_id_of(study),
            name=spec.name,
            optuna_name=optuna_name,
            spec_json=spec.model_dump_json(by_alias=True),
            state=StudyState.RUNNING,
            created_at=self._clock(),
        )
        with self._store.session() as session:
            winner = row.id
            if idempotency_key is not None:
                winner = submit_keys.claim(session, idempotency_key, spec, row.id, row.created_at)
            if winner == row.id:
                session.add(row)
        if winner != row.id:  # another replica's submit with this key came first: it is the one
            self._store.delete_optuna_study(row.id)
            return self.read(winner)
        # Not ``read``: a new study's counts are known, and loading 100,000 queued trials back
        # through Optuna to count them would cost more than queueing them did.
        return StudyRead(
            id=row.id,
            name=row.name,
            state=StudyState.RUNNING,
            created_at=row.created_at,
            spec=spec,
            counts=TrialCounts(waiting=(spec.n_trials or 0) if spec.sampler.type == "grid" else 0),
        )

    def _new_optuna_study(self, spec: StudySpec) -> tuple[str, optuna.Study]:
        """The study in Optuna, under a name a person reads in the dashboard's list (the name
        and when it was submitted, not a random suffix), its objective named."""
        base = f"{spec.name} ({self._clock():%Y-%m-%d %H:%M:%S})"
        for n in itertools.count(1):
            name = base if n == 1 else f"{base} #{n}"
            try:
                study = self._store.create_optuna_study(name, spec)
            except optuna.exceptions.DuplicatedStudyError:
                continue
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and still there
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([f"held-out {spec.objective.metric} (mean over seeds)"])
            return name, study
        raise AssertionError("unreachable")

    def handle(self, study_id: int) -> StudyHandle:
        with self._lock:
            handle = self._handles.get(study_id)
        if handle is not None:
            return handle
        with self._store.session() as session:
            row = session.get(StudyRow, study_id)
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            handle = _handle(row)
        with self._lock:
            self._handles[study_id] = handle
        return handle

    def optuna_study(self, handle: StudyHandle) -> optuna.Study:
        return self._store.optuna_study(handle.id, handle.optuna_name, handle.spec)

    def read(self, study_id: int) -> StudyRead:
        handle = self.handle(study_id)
        study = self.optuna_study(handle)
        trials = self._store.trials(study_id)  # set-based SQL, not Optuna's ORM
        state = self.state(study_id)
        best = _best(study, trials)
        return StudyRead(
            id=handle.id,
            name=handle.name,
            state=state,
            created_at=handle.created_at,
            spec=handle.spec,
            counts=trial_views.count(trials),
            best_trial=None if best is None else trial_views.trial_read(handle.id, best),
        )

    def all(self) -> list[StudyRead]:
        with self._store.session() as session:
            ids = session.scalars(select(StudyRow.id).order_by(StudyRow.id)).all()
        return [self.read(study_id) for study_id in ids]

    def trials(self, study_id: int) -> list[TrialRead]:
        handle = self.handle(study_id)
        trials = self._store.trials(handle.id)
        return [trial_views.trial_read(study_id, t) for t in trials]

    def trial_table(self, study_id: int) -> TrialTable:
        """The study's trials as the analysis reads them: a few set-based queries in SQL, for
        only what an outcome needs (``Store.trial_table``)."""
        return self._store.trial_table(self.handle(study_id).id)

    def curves(self, trial_ids: list[int]) -> dict[int, dict[int, float]]:
        """The learning curves of these trials (``Store.curves``)."""
        return self._store.curves(trial_ids)

    def analyse(self, study_id: int) -> Analysis:
        """The study's analysis: its trial table read, then analysed, reading the curves of
        only the trials the analysis shows (``Store.curves``)."""
        handle = self.handle(study_id)
        table = self._store.trial_table(handle.id)
        return analyse_table(handle.id, handle.name, handle.spec, table, self.curves)

    def state(self, study_id: int) -> StudyState:
        """The study's state: CANCELLED is stored (a person's decision); FINISHED is derived
        from the trial counts (every trial the study will run is final), never written, so no
        crash between a last completion and a second write can leave it RUNNING."""
        with self._store.session() as session:
            row = session.get(StudyRow, study_id)
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            stored = StudyState(row.state)
        if stored != StudyState.RUNNING:  # cancelled, or finished by a service before this one
            return stored
        return StudyState.FINISHED if self.is_done(study_id) else StudyState.RUNNING

    def is_done(self, study_id: int) -> bool:
        """Whether every trial the study will run is final. Once true it stays true (a trial is
        only re-queued from a running one), so the answer is kept in memory."""
        if study_id in self._done:
            return True
        n_trials = self.handle(study_id).spec.n_trials
        assert n_trials is not None  # the spec fills it in at validation
        if not self._store.trial_counts(study_id).is_done(n_trials):
            return False
        with self._lock:
            if study_id not in self._done:
                self._done.add(study_id)
                self._newly_done.append(study_id)
        return True

    def take_newly_done(self) -> list[int]:
        """The studies this process has found done since the last call, each once (their
        dashboard notes are written then: ``service.notes``)."""
        with self._lock:
            taken, self._newly_done = self._newly_done, []
        return taken

    def running_ids(self) -> list[int]:
        """Studies not cancelled and not known to be done: those a lease may draw from."""
        return [i for i in self._store.running_study_ids() if i not in self._done]

    def cancel(self, study_id: int) -> StudyRead:
        """Stop a running study: no more leases, and running trials are pruned at their next
        report (their results so far are kept). A study that is already final is left as is."""
        with self._store.session() as session:
            row = session.get(StudyRow, study_id)
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            if row.state == StudyState.RUNNING and not self.is_done(study_id):
                row.state = StudyState.CANCELLED
        return self.read(study_id)


def _handle(row: StudyRow) -> StudyHandle:
    created_at = row.created_at
    if created_at.tzinfo is None:  # SQLite drops the zone; we only ever store UTC.
        created_at = created_at.replace(tzinfo=UTC)
    return StudyHandle(
        id=row.id,
        name=row.name,
        optuna_name=row.optuna_name,
        spec=StudySpec.model_validate_json(row.spec_json),
        created_at=created_at,
    )


def _best(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial]
) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    return pick(complete, key=lambda t: t.value if t.value is not None else float("nan"))
