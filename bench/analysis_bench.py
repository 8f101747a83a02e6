"""How long a study's analysis takes at 1,000, 10,000 and 100,000 trials: read + analysis.

Per size, a fresh SQLite file holds one grid study (16 arms: 4 optimizers x 4 beta2; 5 warmups;
as many lrs as the size needs; ``--seeds`` paired seeds) submitted as the service submits it
(``Studies.create``: the spec, the Optuna study, every cell queued), whose every cell is then
leased and finished by the storage seam's own writers, as the service writes a worker's result:
``Store.start_trial`` (the cell's parameters, the lease's attributes), a 12-point learning curve
through ``Store.record_intermediate_value`` and ``Store.finish_trial`` (state, value, the
seeds' results), many trials to a transaction. Some seeds diverge, 2 % of trials are pruned
and 2 % fail. Building is not timed (it is printed apart).

Timed: what ``GET /v1/studies/{id}/analysis`` computes (``service.reports``), in this process:
the read (``Studies.trial_table``, i.e. ``Store.trial_table``: a few set-based queries over
Optuna's tables), then the analysis (``service.analysis.analyse_table``, which reads the curves
it shows by trial id, ``Store.curves``), the median of ``--repeats``
(the analysis is read + analysis less the read's median), with the CPU seconds the process
spent on it (on a shared machine the wall time also counts waiting for a core); and,
unless ``--no-http``, the same GET through a real ``hps serve`` on the file (its JSON
included, once, after one untimed GET that warms the service's imports). What the first
analysis imports lazily is loaded before any timing. Targets (issue 13): < 2 s at 10,000
trials, < 20 s at 100,000.

    python bench/analysis_bench.py [--sizes 1000 10000] [--seeds 5] [--repeats 3]
    python bench/analysis_bench.py --sizes 100000 --repeats 1 --no-http   # 20+ minutes to build
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import growth
import httpx
import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from api_schemas import SeedResult, StudySpec
from api_schemas.search_space import values_of
from hps.local import HPS, await_health, free_port, stop
from service import trial_record
from service.analysis import analyse_table
from service.limits import SpecLimits
from service.store import Store, trial_id_of
from service.studies import Studies

OPTIMIZERS = ["adam", "radam", "adamw", "radam_reference"]
BETA2 = [0.95, 0.98, 0.99, 0.999]
WARMUPS = [0, 25, 50, 100, 200]
CELLS_PER_LR = len(OPTIMIZERS) * len(BETA2) * len(WARMUPS)
STEPS = 300
CURVE = range(25, STEPS + 1, 25)
CHANCE = math.log(32)
PER_TRANSACTION = 2000
TARGETS_S = {10_000: 2.0, 100_000: 20.0}


def spec_for(trials: int, seeds: int) -> StudySpec:
    """A grid spec of about ``trials`` cells: 16 arms x 5 warmups x (trials / 80) lrs."""
    lrs = [float(x) for x in np.geomspace(1e-4, 1e-1, max(1, round(trials / CELLS_PER_LR)))]
    return StudySpec.model_validate(
        {
            "name": f"bench-{trials}",
            "workload": {"name": "postln_transformer"},
            "sampler": {"type": "grid"},
            "seeds_per_trial": seeds,
            "search_space": {
                "optimizer": {"type": "categorical", "choices": OPTIMIZERS},
                "beta2": {"type": "categorical", "choices": BETA2},
                "lr": {"type": "categorical", "choices": lrs},
                "warmup_steps": {"type": "categorical", "choices": WARMUPS},
            },
        }
    )


def build(store: Store, spec: StudySpec, rng: np.random.Generator) -> int:
    """Submit ``spec`` and finish every cell through the seam's writers; the study's id."""
    # The service's caps, raised to what the schema allows: the size is the bench's choice.
    limits = SpecLimits(max_trials=10**6, max_grid_cells=10**6, max_seeds_per_trial=10**3)
    study_id = Studies(store, limits=limits).create(spec).id
    # As the service suggests them: each categorical over every value the search space lists.
    distributions = {
        name: CategoricalDistribution(values_of(param) or [])
        for name, param in spec.search_space.items()
    }
    queued = store.trials(study_id)
    for first in range(0, len(queued), PER_TRANSACTION):
        with store.transaction(serial=True, study_id=study_id) as session:
            for waiting in queued[first : first + PER_TRANSACTION]:
                _finish_one(store, session, study_id, waiting, distributions, spec, rng)
    return study_id


def _finish_one(
    store: Store,
    session: Any,
    study_id: int,
    waiting: FrozenTrial,
    distributions: dict[str, CategoricalDistribution],
    spec: StudySpec,
    rng: np.random.Generator,
) -> None:
    """Lease ``waiting`` (a queued cell) and finish it with a plausible result."""
    cell = dict(waiting.system_attrs["fixed_params"])
    drawn = {k: distributions[k] for k in cell}
    attrs = trial_record.started(1, "bench-host:1", "cpu")
    trial_id = store.start_trial(
        session, study_id, running(waiting, cell, drawn, trial_id_of(waiting)), attrs
    )
    lr, warmup = float(cell["lr"]), int(cell["warmup_steps"])
    mean = 0.5 + 0.2 * abs(math.log10(lr) + 2.5) - 0.05 * (warmup > 0)
    state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][
        int(rng.choice(3, p=[0.96, 0.02, 0.02]))
    ]
    last = {TrialState.COMPLETE: STEPS, TrialState.PRUNED: 150, TrialState.FAIL: 50}[state]
    for step in CURVE:
        if step <= last:
            store.record_intermediate_value(session, trial_id, step, mean + 2 / step)
    seeds: list[SeedResult] = []
    if state == TrialState.COMPLETE:
        fail_p = min(1.0, max(0.0, (math.log10(lr) + 2.2) * (0.3 if warmup else 0.8)))
        for seed in spec.seeds:
            diverged = bool(rng.random() < fail_p)
            loss = CHANCE if diverged else float(mean + rng.normal(0, 0.05))
            seeds.append(SeedResult(seed=seed, loss=loss, diverged=diverged, steps=STEPS))
    attrs = {**attrs, **trial_record.finished(seeds, "cpu", "2.13.0", 12.0, 25.0)}
    if state == TrialState.FAIL:
        attrs[trial_record.ATTR_FAILURE] = {"kind": "error", "message": "synthetic"}
    value = float(np.mean([s.loss for s in seeds])) if seeds else None
    store.finish_trial(session, running(waiting, cell, drawn, trial_id), state, value, attrs)


def running(
    waiting: FrozenTrial, params: dict[str, Any], distributions: dict[str, Any], trial_id: int
) -> FrozenTrial:
    """The queued trial as a lease starts it: RUNNING, its cell's parameters drawn."""
    return optuna.trial.FrozenTrial(
        number=waiting.number,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=waiting.datetime_start,
        datetime_complete=None,
        params=params,
        distributions=distributions,
        user_attrs=dict(waiting.user_attrs),
        system_attrs=dict(waiting.system_attrs),
        intermediate_values={},
        trial_id=trial_id,
    )


def analyse_study(studies: Studies, study_id: int, reads: list[float] | None = None) -> int:
    """What the analysis route computes for a study (``Studies.analyse``): its trial table read
    through the seam, then analysed (the curves it shows read by trial id, inside the
    analysis); the table read's seconds go to ``reads``. Returns the number of trials."""
    handle = studies.handle(study_id)
    start = time.perf_counter()
    table = studies.trial_table(handle.id)
    if reads is not None:
        reads.append(time.perf_counter() - start)
    analyse_table(handle.id, handle.name, handle.spec, table, studies.curves)
    return len(table.trial_ids)


def over_http(database_url: str, study_id: int, warm_up: int, folder: Path) -> float:
    """Seconds for ``GET /v1/studies/{id}/analysis`` through a real ``hps serve``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HPS_DATABASE_URL": database_url,
        "HPS_TOKEN_FILE": str(folder / "hps.token"),
    }
    env.pop("HPS_TOKEN", None)
    command = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, cwd=folder)
    try:
        await_health(url, server)
        token = (folder / "hps.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
            http.get(f"/v1/studies/{warm_up}/analysis")  # the first one's imports: not timed
            start = time.perf_counter()
            http.get(f"/v1/studies/{study_id}/analysis").raise_for_status()
            return time.perf_counter() - start
    finally:
        stop([server])


def bench(size: int, args: argparse.Namespace, folder: Path) -> None:
    spec = spec_for(size, args.seeds)
    database_url = f"sqlite:///{folder / f'bench-{size}.db'}"
    store = Store(database_url)
    try:
        start = time.perf_counter()
        warm_up_spec = spec_for(CELLS_PER_LR, 2)
        if args.build == "seam":
            warm_up = build(store, warm_up_spec, np.random.default_rng(1))
            study_id = build(store, spec, np.random.default_rng(0))
        else:
            warm_up = growth.fill(database_url, warm_up_spec, len(warm_up_spec.grid()))
            study_id = growth.fill(database_url, spec, len(spec.grid()))
        built = time.perf_counter() - start
        studies = Studies(store)
        analyse_study(studies, warm_up)  # the first analysis's lazy imports, not timed
        reads: list[float] = []
        totals: list[float] = []
        cpus: list[float] = []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            n_trials = analyse_study(studies, study_id, reads)
            totals.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    finally:
        store.close()
    http = float("nan") if args.no_http else over_http(database_url, study_id, warm_up, folder)
    total = statistics.median(totals)
    target = TARGETS_S.get(size)
    verdict = (
        ""
        if target is None
        else f"  target < {target:g} s: {'met' if total < target else 'NOT met'}"
    )
    print(
        f"{n_trials:>7} {built:>8.1f} {statistics.median(reads):>8.2f} "
        f"{total - statistics.median(reads):>9.2f} {total:>11.2f} {statistics.median(cpus):>8.2f} "
        f"{http:>9.2f}{verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timings per size (median)")
    parser.add_argument("--no-http", action="store_true", help="skip the GET through hps serve")
    parser.add_argument(
        "--build",
        choices=["bulk", "seam"],
        default="bulk",
        help="bulk: growth.fill's one executemany per table (seconds per 10,000 trials); "
        "seam: trial by trial through Store's writers, as the service writes them (about "
        "30 ms a trial on a loaded 2-core machine: minutes for 10,000)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"load {os.getloadavg()[0]:.1f}; seconds; the median of {args.repeats} for in-process")
    print(
        f"{'trials':>7} {'build':>8} {'read':>8} {'analysis':>9} {'read+anal.':>11} "
        f"{'its CPU':>8} {'GET http':>9}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            bench(size, args, Path(folder))


if __name__ == "__main__":
    main()
