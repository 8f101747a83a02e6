"""The outcome array: every (arm, lr, warmup, seed) result of one workload, failures included.

Arms, warmup labels and outcomes are defined in ``api_schemas.analysis``. This module reads
the study's trials (``Store.trial_table``'s columns, or Optuna's trials) once, in one Python
pass of a few dict look-ups a trial (each trial's seeds are a list of dicts), into flat lists,
then scatters them into ``loss[arm, lr, warmup, seed]`` with numpy. Trials that land in
the same cell (free search, or a grid naming the same warmup twice) are averaged seed by seed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from api_schemas import WARMUP_SCHEDULES, WORKLOAD_PARAM, FloatParam, Scalar, StudySpec, Workload
from api_schemas.analysis import OutcomeCounts
from api_schemas.search_space import values_of
from api_schemas.trials import MAX_LOSS
from api_schemas.workloads import chance_loss as workload_chance_loss
from service import trials as tv
from service.store import TrialTable

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

NOT_ARM = frozenset({"lr", "warmup_steps", "warmup_schedule", WORKLOAD_PARAM})
"""Parameters that are axes of the design, never part of an arm."""
W0 = "0"
"""The warmup label of no warmup."""
LR_BINS = 8
"""A continuous lr (free search) is binned into this many log-spaced bins."""


@dataclass(frozen=True)
class Arm:
    """An optimizer plus the values of the arm parameters a trial took (see the module doc)."""

    optimizer: str
    settings: tuple[tuple[str, Scalar], ...]

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.settings)
        return f"{self.optimizer} · {extra}" if extra else self.optimizer


@dataclass
class Outcomes:
    """One workload's results on the design's axes. Missing cells hold NaN and count 0."""

    label: str
    workload: Workload
    chance: float
    arms: list[Arm]
    lrs: Floats
    warmups: list[str]
    loss: Floats
    """(arm, lr, warmup, seed): mean over the cell's trials of the seed's clipped loss."""
    failed: Bools
    """(arm, lr, warmup, seed): the seed failed in at least half of the cell's trials."""
    runs: Ints
    """(arm, lr, warmup): seed runs counted."""
    failures: Ints
    """(arm, lr, warmup): failed seed runs among them."""
    cell_trial: Ints
    """(arm, lr, warmup): the cell's last counted trial (an index into ``trial_ids``), or -1."""
    trial_ids: Ints
    """The storage ids of the counted trials, in the order read (for their curves)."""
    numbers: Ints
    """Their numbers in the study."""
    counts: OutcomeCounts

    @property
    def w0(self) -> int | None:
        """The index of w=0 on the warmup axis, if the design has it."""
        return self.warmups.index(W0) if W0 in self.warmups else None


def warmup_label(params: Mapping[str, Any]) -> str:
    """The warmup a trial ran: "0", a number of linear steps, or an untuned schedule's name."""
    steps = int(params.get("warmup_steps", 0))
    if params.get("optimizer") == "adam_warmup_reference":
        return str(steps)  # it warms up inside the optimizer and ignores the schedule
    schedule = params.get("warmup_schedule", "linear")
    if schedule == "none":
        return W0
    if schedule == "linear":
        return str(steps)
    return str(schedule)


def _warmup_order(label: str) -> tuple[int, float]:
    """Lengths in steps first, shortest first; then schedules in WARMUP_SCHEDULES order."""
    if label.isdigit():
        return 0, float(label)
    return 1, float(WARMUP_SCHEDULES.index(label) if label in WARMUP_SCHEDULES else 99)


def arm_params(spec: StudySpec) -> list[str]:
    """Search-space parameters that make up an arm: finite-valued and varying, in spec order."""
    names = []
    for name, param in spec.search_space.items():
        values = values_of(param)
        if name != "optimizer" and name not in NOT_ARM and values is not None and len(values) > 1:
            names.append(name)
    return names


def chance_loss(workload: Workload, observed: Floats) -> float:
    """ln(classes) for the built-in workloads; for a plugin, the worst loss seen (its failures
    report the chance loss)."""
    known = workload_chance_loss(workload)
    if known is not None:
        return known
    finite = observed[np.isfinite(observed)]
    return float(min(finite.max(), MAX_LOSS)) if finite.size else math.nan


def _lr_key(spec: StudySpec, lrs: Floats) -> Floats:
    param = spec.search_space.get("lr")
    if not isinstance(param, FloatParam) or lrs.size == 0:
        return lrs
    low, high = (
        (math.log(param.low), math.log(param.high)) if param.log else (param.low, param.high)
    )
    x = np.log(lrs) if param.log else lrs
    width = (high - low) / LR_BINS or 1.0
    index = np.clip(np.floor((x - low) / width), 0, LR_BINS - 1)
    centre = low + (index + 0.5) * width
    return np.exp(centre) if param.log else centre


@dataclass
class _Rows:
    """Counted trials of one workload as parallel lists, before they become arrays."""

    arms: list[Arm] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    warmups: list[str] = field(default_factory=list)
    loss: list[list[float]] = field(default_factory=list)
    failed: list[list[bool]] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    """Each counted trial's row in the table read."""
    counts: Counter[str] = field(default_factory=Counter)
    failed_kinds: Counter[str] = field(default_factory=Counter)


class _Reader:
    """Counts trials into rows: one pass over the table, a few dict look-ups a trial. An arm
    and a warmup label are made once per distinct setting, not once per trial."""

    def __init__(self, spec: StudySpec) -> None:
        self.seeds = spec.seeds
        self.arm_names = arm_params(spec)
        self._arms: dict[tuple[Any, ...], Arm] = {}
        self._warmups: dict[tuple[Any, ...], str] = {}

    def arm(self, params: Mapping[str, Any]) -> Arm:
        settings = tuple((n, params[n]) for n in self.arm_names if n in params)
        key = (_typed(params.get("optimizer")), *((n, _typed(v)) for n, v in settings))
        arm = self._arms.get(key)
        if arm is None:
            arm = self._arms[key] = Arm(str(params.get("optimizer")), settings)
        return arm

    def warmup(self, params: Mapping[str, Any]) -> str:
        key = tuple(_typed(params.get(n)) for n in WARMUP_PARAMS)
        label = self._warmups.get(key)
        if label is None:
            label = self._warmups[key] = warmup_label(params)
        return label

    def read(
        self,
        state: OptunaState,
        params: Mapping[str, Any],
        attrs: Mapping[str, Any],
        row: int,
        rows: _Rows,
    ) -> None:
        """Count one trial into ``rows`` (or only its state, if it is not counted)."""
        if state in (OptunaState.WAITING, OptunaState.RUNNING):
            rows.counts["pending"] += 1
            return
        if state == OptunaState.FAIL and attrs.get(tv.ATTR_RETRIED):
            rows.counts["superseded"] += 1
            return
        if "optimizer" not in params or "lr" not in params:
            # Failed before its parameters were drawn: a failure, but of no cell.
            failure = attrs.get(tv.ATTR_FAILURE) or {}
            rows.failed_kinds[str(failure.get("kind", "unknown"))] += 1
            return
        seeds = self.seeds
        by_seed = {int(s["seed"]): s for s in attrs.get(tv.ATTR_SEEDS, [])}
        if state == OptunaState.COMPLETE:
            rows.counts["completed"] += 1
            loss = [float(by_seed[s]["loss"]) if s in by_seed else math.nan for s in seeds]
            failed = [s not in by_seed or bool(by_seed[s]["diverged"]) for s in seeds]
            rows.counts["diverged"] += sum(
                bool(by_seed[s]["diverged"]) for s in seeds if s in by_seed
            )
        else:  # pruned, or failed for good: every seed is a failure at the chance loss
            if state == OptunaState.PRUNED:
                rows.counts["pruned"] += 1
            else:
                failure = attrs.get(tv.ATTR_FAILURE) or {}
                rows.failed_kinds[str(failure.get("kind", "unknown"))] += 1
            loss = [math.nan] * len(seeds)
            failed = [True] * len(seeds)
        rows.arms.append(self.arm(params))
        rows.lrs.append(float(params["lr"]))
        rows.warmups.append(self.warmup(params))
        rows.loss.append(loss)
        rows.failed.append(failed)
        rows.index.append(row)


WARMUP_PARAMS = ("optimizer", "warmup_steps", "warmup_schedule")
"""The parameters ``warmup_label`` reads."""


def _typed(value: Any) -> tuple[type, Any]:
    """A dict key that tells 1, 1.0 and True apart (equal in Python, not as settings)."""
    return type(value), value


def _arm_order(spec: StudySpec, arm: Arm) -> tuple[int, ...]:
    def rank(name: str, value: object) -> int:
        values = values_of(spec.search_space[name]) or []
        return values.index(value) if value in values else len(values)

    return (rank("optimizer", arm.optimizer), *(rank(n, v) for n, v in arm.settings))


def build(spec: StudySpec, trials: TrialTable | Sequence[FrozenTrial]) -> list[Outcomes]:
    """The outcome array of every workload of ``spec``, subject first, from its trials (as
    ``Store.trial_table`` reads them, or as Optuna's trials)."""
    table = trials if isinstance(trials, TrialTable) else TrialTable.of(trials)
    reader = _Reader(spec)
    labels = list(spec.workloads)
    rows = {label: _Rows() for label in labels}
    for i, (state, params, attrs) in enumerate(
        zip(table.states, table.params, table.attrs, strict=True)
    ):
        # A waiting trial's parameters are the fixed ones of its queued cell (``TrialTable``).
        workload_rows = rows.get(str(params.get(WORKLOAD_PARAM, labels[0])))
        if workload_rows is not None:
            reader.read(state, params, attrs, i, workload_rows)
    return [_scatter(spec, label, rows[label], table) for label in labels]


def _scatter(spec: StudySpec, label: str, rows: _Rows, table: TrialTable) -> Outcomes:
    workload = spec.workload_for(label)
    seeds = len(spec.seeds)
    loss = np.asarray(rows.loss, dtype=np.float64).reshape(-1, seeds)
    failed = np.asarray(rows.failed, dtype=bool).reshape(-1, seeds)
    chance = chance_loss(workload, loss)
    # Failures record the chance loss whatever they reported; no loss is worse than chance.
    # A value stored before losses were bounded at the edge cannot overflow the means either.
    loss = np.where(failed | np.isnan(loss), chance, np.clip(loss, -MAX_LOSS, chance))

    arms = sorted(set(rows.arms), key=lambda a: _arm_order(spec, a))
    lr_keys = _lr_key(spec, np.asarray(rows.lrs, dtype=np.float64))
    lrs = np.unique(lr_keys)
    warmups = sorted(set(rows.warmups), key=_warmup_order)
    arm_index = {arm: i for i, arm in enumerate(arms)}
    warmup_index = {w: i for i, w in enumerate(warmups)}
    a = np.asarray([arm_index[arm] for arm in rows.arms], dtype=np.int64)
    li = np.searchsorted(lrs, lr_keys).astype(np.int64)
    wi = np.asarray([warmup_index[w] for w in rows.warmups], dtype=np.int64)

    shape = (len(arms), len(lrs), len(warmups))
    n = np.zeros(shape, dtype=np.int64)
    np.add.at(n, (a, li, wi), 1)
    total = np.zeros((*shape, seeds))
    np.add.at(total, (a, li, wi), loss)
    failed_runs = np.zeros((*shape, seeds))
    np.add.at(failed_runs, (a, li, wi), failed.astype(np.float64))
    fails = np.zeros(shape, dtype=np.int64)
    np.add.at(fails, (a, li, wi), failed.sum(axis=1))
    cell_trial = np.full(shape, -1, dtype=np.int64)
    cell_trial[a, li, wi] = np.arange(len(rows.index), dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n[..., None]

    c = rows.counts
    counts = OutcomeCounts(
        trials=len(rows.index),
        completed=c["completed"],
        pruned=c["pruned"],
        failed=dict(rows.failed_kinds),
        superseded=c["superseded"],
        pending=c["pending"],
        seed_runs=int(failed.size),
        failed_seed_runs=int(failed.sum()),
        diverged_seeds=c["diverged"],
    )
    return Outcomes(
        label=label,
        workload=workload,
        chance=chance,
        arms=arms,
        lrs=lrs,
        warmups=warmups,
        loss=mean,
        failed=failed_runs >= np.maximum(n, 1)[..., None] / 2,
        runs=n * seeds,
        failures=fails,
        cell_trial=cell_trial,
        trial_ids=np.asarray([table.trial_ids[i] for i in rows.index], dtype=np.int64),
        numbers=np.asarray([table.numbers[i] for i in rows.index], dtype=np.int64),
        counts=counts,
    )
