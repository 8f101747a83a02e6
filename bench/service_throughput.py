"""Service throughput: full trial lifecycles per second through hps vs raw Optuna on SQLite.

A lifecycle is what a worker does for one trial: lease, report 5 intermediate values, complete.
hps: the real ``hps serve`` (uvicorn, one process) on a fresh SQLite file, driven over HTTP by
``--clients`` threads, each with its own connection pool and worker token. The baseline: raw
Optuna in this process on another fresh SQLite file, ask -> 5 x report -> tell, with the same
search space, by the same number of threads. Both run for ``--seconds`` in this invocation, so
the ratio compares like with like on whatever machine runs it (the issue's target: >= 3x raw).

    python bench/service_throughput.py [--seconds 20] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from api_schemas import IntermediateReport, LeaseRequest, SeedResult, TrialResult
from api_schemas.tokens import Scope
from hps.client import Client
from hps.local import HPS, await_health, free_port

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}
REPORTS = 5


def _run_threads(clients: int, seconds: float, lifecycle: Callable[[], None]) -> tuple[int, float]:
    """Run ``lifecycle`` in a loop on ``clients`` threads; (lifecycles done, seconds)."""
    done = [0] * clients
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        try:
            while time.monotonic() < stop:
                lifecycle()
                done[i] += 1
        except BaseException as error:  # report it after the run; never hide a failure
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(done), time.monotonic() - start


def raw_optuna(path: Path, clients: int, seconds: float) -> float:
    """Lifecycles/s of raw Optuna ask/report/tell on a SQLite file."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))

    def lifecycle() -> None:
        trial = study.ask()
        trial.suggest_categorical("optimizer", ["adam", "radam"])
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        for step in range(REPORTS):
            trial.report(1.0 / (step + 1), step)
        study.tell(trial, 0.5)

    done, elapsed = _run_threads(clients, seconds, lifecycle)
    return done / elapsed


def through_hps(directory: Path, clients: int, seconds: float) -> float:
    """Lifecycles/s through the real service over HTTP."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HPS_DATABASE_URL": f"sqlite:///{directory / 'hps.db'}",
        "HPS_TOKEN_FILE": str(directory / "hps.token"),
    }
    serve = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(serve, env=env, cwd=directory)
    try:
        await_health(url, server)
        admin = Client(url, token=(directory / "hps.token").read_text().strip())
        study = admin.submit(
            {
                "name": "throughput",
                "workload": {"name": "postln_transformer"},
                "n_trials": 100_000,
                "seeds_per_trial": 1,
                "sampler": {"type": "random", "seed": 0},
                "search_space": SPACE,
            }
        )
        worker_token = admin.create_token("bench", [Scope.WORKER]).token
        local = threading.local()

        def lifecycle() -> None:
            if not hasattr(local, "client"):
                local.client = Client(url, token=worker_token)
            client: Client = local.client
            assignment = client.lease(LeaseRequest(worker_id=threading.current_thread().name))
            assert assignment is not None and assignment.study_id == study.id
            token = assignment.lease_token
            for step in range(REPORTS):
                report = IntermediateReport(lease_token=token, step=step, value=1.0 / (step + 1))
                client.report(assignment.trial_id, report)
            seeds = [SeedResult(seed=0, loss=0.5, diverged=False, steps=REPORTS)]
            client.complete(
                assignment.trial_id,
                TrialResult(lease_token=token, state="completed", seeds=seeds),
            )

        done, elapsed = _run_threads(clients, seconds, lifecycle)
        return done / elapsed
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per side")
    parser.add_argument("--clients", type=int, default=4, help="concurrent workers / threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_optuna(Path(tmp) / "raw.db", args.clients, args.seconds)
        ours = through_hps(Path(tmp), args.clients, args.seconds)
    lifecycle = f"lease + {REPORTS} reports + complete"
    print(f"{args.clients} clients, {args.seconds:g} s each side; a lifecycle is {lifecycle}")
    print(f"raw Optuna on SQLite   {raw:8.1f} lifecycles/s")
    print(f"hps over HTTP, SQLite  {ours:8.1f} lifecycles/s")
    print(f"ratio hps / raw Optuna {ours / raw:8.2f}  (target >= 3)")


if __name__ == "__main__":
    main()
