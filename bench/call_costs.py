"""What each call of a trial's lifecycle costs, in-process: hps's domain layer vs raw Optuna.

No HTTP, no threads: the service's ``Leases`` (lease, report, heartbeat, complete) and a token
lookup on one fresh SQLite file, and raw Optuna's ask, suggests, report and tell on another,
timed call by call. It is the profile behind ``service_throughput.py``'s ratio: where a
lifecycle's time goes, and which calls cost more than Optuna's own.

    python bench/call_costs.py [--lifecycles 150]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from api_schemas import IntermediateReport, LeaseRequest, SeedResult, StudySpec, TrialResult
from api_schemas.tokens import Scope, TokenCreate
from service.app import create_app
from service.settings import Settings
from service.tokens import hash_secret

REPORTS = 5
WARM_UP = 20
"""Lifecycles run before timing: first calls pay imports and caches."""
SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}
T = TypeVar("T")
Times = dict[str, list[float]]


def timed(times: Times, name: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = call()
    times[name].append(time.perf_counter() - start)
    return result


def hps_calls(directory: Path, lifecycles: int) -> Times:
    """The service's domain calls, as the routes make them, on a fresh SQLite file."""
    settings = Settings(
        database_url=f"sqlite:///{directory / 'hps.db'}", token_file=directory / "hps.token"
    )
    app = create_app(settings)
    studies, leases, tokens = app.state.studies, app.state.leases, app.state.tokens
    spec = {
        "name": "calls",
        "workload": {"name": "postln_transformer"},
        "n_trials": WARM_UP + lifecycles,
        "seeds_per_trial": 1,
        "sampler": {"type": "random", "seed": 0},
        "search_space": SPACE,
    }
    studies.create(StudySpec.model_validate(spec))
    digest = hash_secret(tokens.create(TokenCreate(name="w", scopes=[Scope.WORKER])).token)
    times: Times = defaultdict(list)
    for _ in range(WARM_UP + lifecycles):
        timed(times, "token lookup (a cache miss)", partial(tokens._lookup, digest))
        trial = timed(times, "lease", partial(leases.lease, LeaseRequest(worker_id="w")))
        assert trial is not None
        token = trial.lease_token
        for step in range(REPORTS):
            body = IntermediateReport(lease_token=token, step=step, value=1.0 / (step + 1))
            timed(times, "report", partial(leases.report, trial.trial_id, body))
        timed(times, "heartbeat", partial(leases.heartbeat, trial.trial_id, token))
        seeds = [SeedResult(seed=0, loss=0.5, diverged=False, steps=REPORTS)]
        result = TrialResult(lease_token=token, state="completed", seeds=seeds)
        timed(times, "complete", partial(leases.complete, trial.trial_id, result))
    app.state.store.close()
    return {name: values[WARM_UP:] for name, values in times.items()}


def suggest(trial: optuna.Trial) -> None:
    trial.suggest_categorical("optimizer", ["adam", "radam"])
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)


def optuna_calls(directory: Path, lifecycles: int) -> Times:
    """Raw Optuna's ask, suggests, reports and tell on a fresh SQLite file."""
    storage = f"sqlite:///{directory / 'raw.db'}"
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    times: Times = defaultdict(list)
    for _ in range(WARM_UP + lifecycles):
        trial = timed(times, "ask", study.ask)

        timed(times, "2 suggests", partial(suggest, trial))
        for step in range(REPORTS):
            timed(times, "report", partial(trial.report, 1.0 / (step + 1), step))
        timed(times, "tell", partial(study.tell, trial, 0.5))
    return {name: values[WARM_UP:] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=150, help="timed, per side")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        ours = hps_calls(Path(tmp), args.lifecycles)
        raw = optuna_calls(Path(tmp), args.lifecycles)
    print(f"{args.lifecycles} lifecycles per side, in-process on SQLite; median per call")
    for side, times in (("hps", ours), ("raw Optuna", raw)):
        for name, values in times.items():
            print(f"{side:<11} {name:<28} {statistics.median(values) * 1000:7.2f} ms")
    per_lifecycle = {
        side: sum(statistics.median(v) * (REPORTS if k == "report" else 1) for k, v in t.items())
        for side, t in (("hps", ours), ("raw Optuna", raw))
    }
    print(
        f"a lifecycle (lease, {REPORTS} reports, heartbeat, complete, a token lookup): "
        f"hps {per_lifecycle['hps'] * 1000:.1f} ms, raw Optuna (ask, suggests, {REPORTS} "
        f"reports, tell) {per_lifecycle['raw Optuna'] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
