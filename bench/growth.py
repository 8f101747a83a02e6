"""Growth: lease, report and complete latency and analysis time at 100, 1,000 and 10,000 trials.

For each size: a fresh SQLite file holding one grid study (4 optimizers x 4 beta2 x 5 warmups x
as many lrs as it takes, 3 seeds, median pruner) whose first ``size`` cells are finished trials
and whose other cells (at least ``--leases`` + 1) wait to be leased: a study part way through,
as the service holds one. A grid, because that is the study the verdict needs, so its analysis
is the full one. The finished trials are what the service stores for a worker's result (params
under the distributions it suggests them from, per-seed results and the other attributes,
learning curves, a released lease; a few pruned or failed), written straight into the file in
one transaction: over HTTP, 10,000 would take the best part of an hour.

Then the real ``hps serve`` starts on that file and is timed over HTTP, one request at a time so
each latency is the service's own: ``--leases`` lifecycles of lease, 4 reports past every warmup
(so the median pruner decides each; its answers are counted, not acted on, so every size times
the same requests) and complete; then ``GET /v1/studies/{id}/analysis``. What a service pays once
per start is kept apart: the first lease loads the study (shown on its own), the first analysis
imports what the analysis needs (not timed). The last line is the growth: each figure at the
largest size over the same at the smallest (p50 over p50; flat is x1).

    python bench/growth.py [--sizes 100 1000 10000] [--leases 50] [--analyses 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json
from optuna.storages._rdb import models as optuna_models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Engine, func, insert, select

from api_schemas import (
    IntermediateReport,
    LeaseRequest,
    SeedResult,
    StudySpec,
    StudyState,
    TrialResult,
)
from api_schemas.search_space import values_of
from api_schemas.tokens import Scope
from hps.client import Client
from hps.local import HPS, await_health, free_port, stop
from service import trials as tv
from service.models import LeaseRow, StudyRow
from service.store import Store

OPTIMIZERS = ["adam", "radam", "adamw", "radam_reference"]
BETA2 = [0.95, 0.98, 0.99, 0.999]
WARMUPS = [0, 25, 50, 100, 200]
CELLS_PER_LR = len(OPTIMIZERS) * len(BETA2) * len(WARMUPS)
STEPS = 300
CURVE = range(25, STEPS + 1, 25)
"""The steps a trial reports at (report_every 25, the workload's default)."""
TIMED_REPORTS = range(225, STEPS + 1, 25)
"""Past the largest warmup (200): the service never prunes inside a trial's warmup."""
CHANCE = math.log(32)


def spec_for(size: int, leases: int) -> StudySpec:
    """A grid with at least ``size + leases + 1`` cells (the +1: the untimed first lease)."""
    n_lrs = math.ceil((size + leases + 1) / CELLS_PER_LR)
    lrs = [float(x) for x in np.geomspace(1e-4, 1e-1, n_lrs)]
    return StudySpec.model_validate(
        {
            "name": f"growth-{size}",
            "workload": {"name": "postln_transformer"},
            "sampler": {"type": "grid"},
            "pruner": {"type": "median", "n_startup_trials": 5},
            "seeds_per_trial": 3,
            "search_space": {
                "optimizer": {"type": "categorical", "choices": OPTIMIZERS},
                "beta2": {"type": "categorical", "choices": BETA2},
                "lr": {"type": "categorical", "choices": lrs},
                "warmup_steps": {"type": "categorical", "choices": WARMUPS},
            },
        }
    )


def mean_loss(cell: dict[str, Any]) -> float:
    """A plausible final loss: best near lr 3e-3, a little better with warmup."""
    lr, warmup = float(cell["lr"]), int(cell["warmup_steps"])
    return 0.5 + 0.2 * abs(math.log10(lr) + 2.5) - 0.05 * (warmup > 0)


def synthetic(
    spec: StudySpec, cells: list[dict[str, Any]], rng: np.random.Generator
) -> list[FrozenTrial]:
    """One finished trial per cell, stored as the service stores a worker's result."""
    # As the service suggests them: each categorical over every value the search space lists.
    distributions = {
        name: CategoricalDistribution(values_of(param) or [])
        for name, param in spec.search_space.items()
    }
    out = []
    for cell in cells:
        mean = mean_loss(cell)
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][
            int(rng.choice(3, p=[0.96, 0.02, 0.02]))
        ]
        last = {TrialState.COMPLETE: STEPS, TrialState.PRUNED: 150, TrialState.FAIL: 50}[state]
        seeds: list[dict[str, Any]] = []
        if state == TrialState.COMPLETE:
            fail_p = min(1.0, max(0.0, (math.log10(float(cell["lr"])) + 2.2) * 0.5))
            for seed in spec.seeds:
                diverged = bool(rng.random() < fail_p)
                loss = CHANCE if diverged else float(mean + rng.normal(0, 0.05))
                seeds.append({"seed": seed, "loss": loss, "diverged": diverged, "steps": STEPS})
        attrs: dict[str, Any] = {
            tv.ATTR_ATTEMPT: 1,
            tv.ATTR_WORKER: "bench-host:1",
            tv.ATTR_DEVICE: "cpu",
            tv.ATTR_SEEDS: seeds,
            tv.ATTR_TORCH: "2.13.0",
            tv.ATTR_WALL_TIME: 12.0,
            tv.ATTR_STEPS_PER_SECOND: 25.0,
        }
        if state == TrialState.FAIL:
            attrs[tv.ATTR_FAILURE] = {"kind": "error", "message": "synthetic"}
        noise = float(rng.normal(0, 0.05))
        out.append(
            optuna.trial.create_trial(
                state=state,
                params=cell,
                distributions={k: distributions[k] for k in cell},
                value=float(np.mean([s["loss"] for s in seeds])) if seeds else None,
                user_attrs=attrs,
                intermediate_values={s: mean + noise + 2 / s for s in CURVE if s <= last},
            )
        )
    return out


def fill(database_url: str, spec: StudySpec, size: int) -> int:
    """Create the study as ``Studies.create`` does, with its first ``size`` cells finished.

    Returns the study's id.
    """
    store = Store(database_url)
    try:
        optuna_name = f"{spec.name}-bench"
        study = store.create_optuna_study(optuna_name, spec)
        cells = spec.grid()
        finished = synthetic(spec, cells[:size], np.random.default_rng(0))
        trial_ids = insert_trials(store.engine, study._study_id, finished)
        for cell in cells[size:]:
            study.enqueue_trial(cell)
        ended = datetime.now(UTC) - timedelta(hours=1)
        with store.session() as session:
            session.add(
                StudyRow(
                    id=study._study_id,
                    name=spec.name,
                    optuna_name=optuna_name,
                    spec_json=spec.model_dump_json(by_alias=True),
                    state=StudyState.RUNNING,
                    created_at=ended - timedelta(days=1),
                )
            )
            session.add_all(
                LeaseRow(
                    trial_id=trial_id,
                    study_id=study._study_id,
                    token_hash=f"{trial_id:064x}",
                    expires_at=ended,
                    released=True,
                )
                for trial_id, trial in zip(trial_ids, finished, strict=True)
            )
        return study._study_id
    finally:
        store.close()


def insert_trials(engine: Engine, study_id: int, trials: list[FrozenTrial]) -> list[int]:
    """What ``Study.add_trials`` stores, in one transaction; returns the new trials' ids.

    Optuna adds a trial row by row through its ORM, some 45 statements and 30 ms a trial here:
    five minutes for 10,000. The rows are the same, built with Optuna's own conversions.
    """
    m = optuna_models
    curve = m.TrialIntermediateValueModel
    rows: dict[type[m.BaseModel], list[dict[str, Any]]] = {
        model: []
        for model in (
            m.TrialModel,
            m.TrialParamModel,
            m.TrialValueModel,
            curve,
            m.TrialUserAttributeModel,
        )
    }
    # A study's trials share a few distributions, but a categorical's JSON lists every choice
    # (1,250 lrs at 100,000 trials: 28 KB): encode each distinct one once, not once a row.
    encoded: dict[int, tuple[BaseDistribution, str]] = {}

    def to_json(distribution: BaseDistribution) -> str:
        known = encoded.get(id(distribution))
        if known is None:  # the distribution is kept with its JSON, so its id is not reused
            known = encoded[id(distribution)] = (distribution, distribution_to_json(distribution))
        return known[1]

    with engine.begin() as connection:
        last_id = connection.scalar(select(func.max(m.TrialModel.trial_id))) or 0
        numbered = connection.scalar(select(func.count()).where(m.TrialModel.study_id == study_id))
        ids = [last_id + 1 + i for i in range(len(trials))]
        for i, (trial_id, trial) in enumerate(zip(ids, trials, strict=True)):
            rows[m.TrialModel].append(
                {
                    "trial_id": trial_id,
                    "number": (numbered or 0) + i,
                    "study_id": study_id,
                    "state": trial.state,
                    "datetime_start": trial.datetime_start,
                    "datetime_complete": trial.datetime_complete,
                }
            )
            for name, value in trial.params.items():
                distribution = trial.distributions[name]
                rows[m.TrialParamModel].append(
                    {
                        "trial_id": trial_id,
                        "param_name": name,
                        "param_value": distribution.to_internal_repr(value),
                        "distribution_json": to_json(distribution),
                    }
                )
            for objective, value in enumerate(trial.values or []):
                stored, kind = m.TrialValueModel.value_to_stored_repr(value)
                rows[m.TrialValueModel].append(
                    {
                        "trial_id": trial_id,
                        "objective": objective,
                        "value": stored,
                        "value_type": kind,
                    }
                )
            for step, point in trial.intermediate_values.items():
                stored_point, point_kind = curve.intermediate_value_to_stored_repr(point)
                rows[curve].append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": stored_point,
                        "intermediate_value_type": point_kind,
                    }
                )
            for key, value in trial.user_attrs.items():
                rows[m.TrialUserAttributeModel].append(
                    {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                )
        for model, values in rows.items():
            if values:
                connection.execute(insert(model), values)
    return ids


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """A real ``hps serve`` on ``directory/hps.db`` (as it is); stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HPS_DATABASE_URL": f"sqlite:///{directory / 'hps.db'}",
        "HPS_TOKEN_FILE": str(directory / "hps.token"),
    }
    env.pop("HPS_TOKEN", None)
    command = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, cwd=directory)
    try:
        await_health(url, server)
        yield url
    finally:
        stop([server])


@dataclass
class Timings:
    """Seconds per request of one size, by kind."""

    trials: int
    fill_s: float = 0.0
    lease: list[float] = field(default_factory=list)
    report: list[float] = field(default_factory=list)
    complete: list[float] = field(default_factory=list)
    analysis: list[float] = field(default_factory=list)
    analyse_s: list[float] = field(default_factory=list)
    """The service's own ``analyse()`` time, as the analysis reports it."""
    pruned: int = 0
    first_lease: float = float("nan")
    """The first lease after a start, which loads the study: paid once, so kept apart."""


@contextlib.contextmanager
def _timer(into: list[float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into.append(time.perf_counter() - start)


def lifecycle(client: Client, spec: StudySpec, timings: Timings) -> None:
    """Lease a trial, report past its warmup, complete it; each request timed into ``timings``."""
    with _timer(timings.lease):
        assignment = client.lease(LeaseRequest(worker_id="growth-bench"))
    assert assignment is not None, "the study ran out of cells"
    token = assignment.lease_token
    loss = mean_loss(assignment.params)
    for step in TIMED_REPORTS:
        report = IntermediateReport(lease_token=token, step=step, value=loss + 2 / step)
        with _timer(timings.report):
            timings.pruned += client.report(assignment.trial_id, report)
    seeds = [SeedResult(seed=s, loss=loss, diverged=False, steps=STEPS) for s in spec.seeds]
    result = TrialResult(lease_token=token, state="completed", seeds=seeds)
    with _timer(timings.complete):
        client.complete(assignment.trial_id, result)


def bench(size: int, leases: int, analyses: int) -> Timings:
    """Fill a study of ``size`` finished trials, then time a fresh service on it."""
    spec = spec_for(size, leases)
    with tempfile.TemporaryDirectory(prefix="hps-growth-") as tmp:
        directory = Path(tmp)
        start = time.perf_counter()
        study_id = fill(f"sqlite:///{directory / 'hps.db'}", spec, size)
        timings = Timings(size, fill_s=time.perf_counter() - start)
        with serve(directory) as url:
            token = (directory / "hps.token").read_text().strip()
            measure(url, token, spec, study_id, timings, leases=leases, analyses=analyses)
    return timings


def measure(
    url: str,
    admin_token: str,
    spec: StudySpec,
    study_id: int,
    timings: Timings,
    *,
    leases: int,
    analyses: int,
) -> None:
    """Time ``leases`` lifecycles, then ``analyses`` analyses, one request at a time."""
    with Client(url, token=admin_token) as admin:
        worker_token = admin.create_token("growth-bench", [Scope.WORKER]).token
        with Client(url, token=worker_token) as worker:
            first = Timings(timings.trials)
            lifecycle(worker, spec, first)  # apart: it loads the study into the service
            timings.first_lease = first.lease[0]
            for _ in range(leases):
                lifecycle(worker, spec, timings)
        admin.analysis(study_id)  # untimed: the analysis's imports
        for _ in range(analyses):
            with _timer(timings.analysis):
                analysis = admin.analysis(study_id)
            timings.analyse_s.append(analysis.seconds)


def _ms(values: list[float]) -> str:
    p50, p99 = np.percentile(values, [50, 99]) * 1000
    return f"{p50:7.1f} /{p99:7.1f}"


def _median(timings: Timings, kind: str) -> float:
    values: list[float] = getattr(timings, kind)
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--leases", type=int, default=50, help="timed lifecycles per size")
    parser.add_argument("--analyses", type=int, default=3, help="timed analyses per size")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = []
    for size in args.sizes:
        results.append(bench(size, args.leases, args.analyses))
        print(f"... {size} trials done", flush=True)
    n_reports = args.leases * len(TIMED_REPORTS)
    print(
        f"{args.leases} lifecycles (lease, {len(TIMED_REPORTS)} reports, complete) per size, "
        f"one request at a time; analysis: median of {args.analyses}"
    )
    print(
        f"{'trials':>7} {'lease p50/p99 ms':>17} {'report p50/p99 ms':>17} "
        f"{'complete p50/p99 ms':>19} {'analysis s':>10} {'analyse() s':>11} "
        f"{'pruned':>9} {'1st lease ms':>12} {'fill s':>7}"
    )
    for t in results:
        print(
            f"{t.trials:>7} {_ms(t.lease):>17} {_ms(t.report):>17} {_ms(t.complete):>19} "
            f"{statistics.median(t.analysis):>10.2f} {statistics.median(t.analyse_s):>11.2f} "
            f"{f'{t.pruned}/{n_reports}':>9} {t.first_lease * 1000:>12.1f} {t.fill_s:>7.1f}"
        )
    small, large = min(results, key=lambda t: t.trials), max(results, key=lambda t: t.trials)
    if large.trials > small.trials:
        kinds = ("lease", "report", "complete", "analysis")
        ratios = ", ".join(f"{k} x{_median(large, k) / _median(small, k):.2f}" for k in kinds)
        print(f"growth, {large.trials} vs {small.trials} trials (p50 over p50): {ratios}")


if __name__ == "__main__":
    main()
