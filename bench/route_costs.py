"""Route costs: the service's CPU per request on each worker route, one route at a time.

``bench/scale.py`` measures a mix under load; this says what each route costs, which is what
to change when the mix's CPU per request is over its 3 ms target (issue 13). Against the real
``hps serve`` on a fresh SQLite file (as ``scale.py`` starts it), one client on one keep-alive
connection sends the requests of one route back to back, so the service does nothing else, and
the service process's CPU (user + system, from ``/proc``) over a phase, divided by its requests,
is that route's cost. The phases, in a trial's order::

    health       GET /v1/health: no token, no body, no database (the HTTP floor)
    lease        POST /v1/leases, N times (N trials of a random-search study)
    report       POST /v1/trials/{id}/reports, once per trial
    heartbeat    POST /v1/trials/{id}/heartbeat, once per trial
    complete     POST /v1/trials/{id}/complete, once per trial
    lease-batch  POST /v1/lease-batches of 8 (cost per trial)
    reports      POST /v1/reports, one step of the 8 (cost per trial)
    completions  POST /v1/completions of the 8 (cost per trial)

    python bench/route_costs.py [--trials 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scale import SPACE, cpu_s, serve  # bench/ is the script's directory, first on its path

from api_schemas.tokens import Scope
from hps.client import Client

BATCH = 8


class Wire:
    """One keep-alive connection; ``post`` returns the decoded JSON answer (None for 204)."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port))
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object = None) -> Any:
        payload = None if body is None else json.dumps(body)
        self.connection.request(method, path, payload, self.headers)
        answer = self.connection.getresponse()
        data = answer.read()
        if answer.status >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status} {data[:200]!r}")
        return json.loads(data) if data else None


def _result(token: str, seeds: list[int]) -> dict[str, Any]:
    return {
        "lease_token": token,
        "state": "completed",
        "seeds": [{"seed": s, "loss": 0.5, "diverged": False, "steps": 100} for s in seeds],
    }


def measure(trials: int) -> dict[str, float]:
    """ms of service CPU per request (per trial for the batch routes), by phase."""
    costs: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hps-routes-") as tmp:
        directory = Path(tmp)
        with serve(directory, 600.0) as (url, server):
            with Client(url, token=(directory / "hps.token").read_text().strip()) as admin:
                admin.submit(
                    {
                        "name": "routes",
                        "workload": {"name": "postln_transformer"},
                        "n_trials": 100_000,
                        "seeds_per_trial": 1,
                        "sampler": {"type": "random", "seed": 0},
                        "search_space": SPACE,
                    }
                )
                token = admin.create_token("routes-bench", [Scope.WORKER]).token
            wire = Wire(url, token)

            def phase(name: str, count: int, send: Callable[[int], object]) -> list[Any]:
                wire.call("GET", "/v1/health")  # the connection is open before the clock
                before = cpu_s(server.pid)
                answers = [send(i) for i in range(count)]
                time.sleep(0.05)  # let the last request's bookkeeping land in /proc
                after = cpu_s(server.pid)
                assert before is not None and after is not None, "needs Linux's /proc"
                costs[name] = (after - before) / count * 1000
                return answers

            phase("health", trials, lambda _: wire.call("GET", "/v1/health"))
            leased = phase(
                "lease", trials, lambda _: wire.call("POST", "/v1/leases", {"worker_id": "bench"})
            )
            phase(
                "report",
                trials,
                lambda i: wire.call(
                    "POST",
                    f"/v1/trials/{leased[i]['trial_id']}/reports",
                    {"lease_token": leased[i]["lease_token"], "step": 10, "value": 0.5},
                ),
            )
            phase(
                "heartbeat",
                trials,
                lambda i: wire.call(
                    "POST",
                    f"/v1/trials/{leased[i]['trial_id']}/heartbeat",
                    {"lease_token": leased[i]["lease_token"]},
                ),
            )
            phase(
                "complete",
                trials,
                lambda i: wire.call(
                    "POST",
                    f"/v1/trials/{leased[i]['trial_id']}/complete",
                    _result(leased[i]["lease_token"], leased[i]["seeds"]),
                ),
            )
            batches = trials // BATCH
            leased_batches = phase(
                "lease-batch",
                batches,
                lambda _: wire.call(
                    "POST", "/v1/lease-batches", {"worker_id": "bench", "max_trials": BATCH}
                ),
            )
            for batch in leased_batches:
                assert len(batch["trials"]) == BATCH
            phase(
                "reports",
                batches,
                lambda i: wire.call(
                    "POST",
                    "/v1/reports",
                    {
                        "reports": [
                            {
                                "trial_id": t["trial_id"],
                                "lease_token": t["lease_token"],
                                "step": 10,
                                "value": 0.5,
                            }
                            for t in leased_batches[i]["trials"]
                        ]
                    },
                ),
            )
            phase(
                "completions",
                batches,
                lambda i: wire.call(
                    "POST",
                    "/v1/completions",
                    {
                        "results": [
                            {"trial_id": t["trial_id"], **_result(t["lease_token"], t["seeds"])}
                            for t in leased_batches[i]["trials"]
                        ]
                    },
                ),
            )
    for name in ("lease-batch", "reports", "completions"):
        costs[name] /= BATCH
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="requests per single route")
    args = parser.parse_args()
    costs = measure(args.trials)
    print("service CPU, ms per request (the batch routes: per trial, batches of 8)")
    for name, ms in costs.items():
        print(f"  {name:<12} {ms:6.2f}")


if __name__ == "__main__":
    main()
