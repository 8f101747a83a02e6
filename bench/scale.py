"""Scale: 10, 100 and 1,000 simulated workers, heartbeats included, against one ``hps serve``.

For each worker count: the real ``hps serve`` (one uvicorn process, as it is run) on a fresh
SQLite file, one random-search study with a budget no run exhausts, and N simulated workers in
this one client process: asyncio tasks sharing one ``httpx.AsyncClient`` (a thousand OS threads
would measure the client, not the service), as many connections as requests in flight. Each
does what ``worker.loop`` does, less the training::

    lease -> [trial: a report every trial/5 s; a heartbeat when lease/3 s pass without a
              renewal] -> complete -> lease

The load model, per worker: a trial every ``--trial-seconds`` (default 60: minute-long trials)
with 1 lease, 5 reports, the heartbeats the gaps between reports need and 1 complete. The
service runs with HPS_LEASE_SECONDS=``--lease-seconds`` (default 30, a quarter of the service's
default, so that heartbeats are part of the load): a beat is due 10 s after each renewal and a
report comes every 12 s, so one beat per gap, 5 per trial; 12 requests a minute, 0.2 requests/s
per worker and 200/s from 1,000 workers.

First leases are spread evenly over one trial (the ramp), so the workers are out of step as
real ones are; only requests started in the ``--seconds`` after the ramp are counted, and those
still on the wire when it ends are waited for. Like real workers the simulated ones are a closed
loop: a slow answer delays a worker's next request, so "served" below "offered" means the
service did not keep up. Every request is timed with ``time.perf_counter``; an error is any
answer but a 2xx (a lease's 204, "no work", is a 2xx), a timeout (``--timeout``, 30 s, so that
slowness shows as latency) or a failed connection. The client's and the service's CPU over the
window are printed too: on a small machine the client may be what runs out.

Target (issue 7): 1,000 workers, p99 lease latency < 200 ms, 0 errors.

    python bench/scale.py [--workers 10 100 1000] [--seconds 30] [--trial-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from api_schemas import (
    Heartbeat,
    IntermediateReport,
    LeaseRequest,
    SeedResult,
    TrialAssignment,
    TrialResult,
)
from api_schemas.tokens import Scope
from hps.client import Client
from hps.local import HPS, await_health, free_port, stop

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}
REPORTS = 5
STEPS_PER_REPORT = 25
NO_WORK_POLL_S = 1.0
KINDS = ("lease", "report", "heartbeat", "complete")
TARGET_WORKERS, TARGET_P99_S = 1000, 0.200


@dataclass(frozen=True)
class Load:
    """What each simulated worker does; see the module docstring for the model."""

    trial_s: float
    lease_s: float
    ramp_s: float
    seconds: float
    timeout_s: float

    @property
    def heartbeat_s(self) -> float:
        return self.lease_s / 3  # as worker.heartbeat.heartbeat_interval

    def requests_per_worker_s(self) -> float:
        # As worker.heartbeat: a beat only after an interval in which no report renewed the lease.
        gap = self.trial_s / REPORTS
        heartbeats = REPORTS * max(0, math.ceil(gap / self.heartbeat_s) - 1)
        return (1 + REPORTS + heartbeats + 1) / self.trial_s


@dataclass
class Sample:
    kind: str
    started: float
    latency_s: float
    error: str | None


@dataclass
class Result:
    workers: int
    offered: float
    served: float
    latency: dict[str, list[float]]
    errors: Counter[tuple[str, str]]
    client_cpu: float
    service_cpu: float | None
    log_tail: str = ""

    def p(self, kind: str | None, q: float) -> float:
        values = self.latency[kind] if kind else [x for k in KINDS for x in self.latency[k]]
        return float(np.percentile(values, q)) if values else float("nan")

    def error_count(self, kind: str | None = None) -> int:
        return sum(n for (k, _), n in self.errors.items() if kind in (None, k))


class Swarm:
    """N simulated workers against one service; every request they send is recorded."""

    def __init__(self, http: httpx.AsyncClient, load: Load) -> None:
        self.http = http
        self.load = load
        self.samples: list[Sample] = []
        self.stop = asyncio.Event()

    async def run_worker(self, name: str, first_lease_at: float) -> None:
        if await self._sleep(first_lease_at - time.perf_counter()):
            return
        request = LeaseRequest(worker_id=name).model_dump(mode="json")
        while not self.stop.is_set():
            response = await self._post("lease", "/v1/leases", request)
            if response is None or response.status_code != 200:  # 204: no work; or an error
                if await self._sleep(NO_WORK_POLL_S):  # as a worker polls, then asks again
                    return
                continue
            await self._trial(TrialAssignment.model_validate(response.json()))

    async def _trial(self, assignment: TrialAssignment) -> None:
        trial, token = assignment.trial_id, assignment.lease_token
        done = asyncio.Event()
        renewed = [time.perf_counter()]  # when the lease was last renewed, as Heartbeats keeps it
        beats = asyncio.create_task(self._heartbeats(trial, token, done, renewed))
        try:
            for k in range(1, REPORTS + 1):
                if await self._sleep(self.load.trial_s / REPORTS):
                    return  # the run is over; the trial is abandoned with the service
                step = k * STEPS_PER_REPORT
                report = IntermediateReport(lease_token=token, step=step, value=1.0 / k)
                answer = await self._post(
                    "report", f"/v1/trials/{trial}/reports", report.model_dump(mode="json")
                )
                if answer is not None and answer.status_code == 409:
                    return  # the lease is lost: a real worker drops the trial
                if answer is not None and answer.is_success:
                    renewed[0] = time.perf_counter()
            seeds = [
                SeedResult(seed=s, loss=0.5, diverged=False, steps=REPORTS * STEPS_PER_REPORT)
                for s in assignment.seeds
            ]
            result = TrialResult(lease_token=token, state="completed", seeds=seeds)
            await self._post(
                "complete", f"/v1/trials/{trial}/complete", result.model_dump(mode="json")
            )
        finally:
            done.set()  # as Heartbeats.stop: no new beat, and one on the wire is waited for
            await beats

    async def _heartbeats(
        self, trial: int, token: str, done: asyncio.Event, renewed: list[float]
    ) -> None:
        body = Heartbeat(lease_token=token).model_dump(mode="json")
        while True:
            due = renewed[0] + self.load.heartbeat_s
            if await _wait(done, due - time.perf_counter()):
                return
            if time.perf_counter() < renewed[0] + self.load.heartbeat_s:
                continue  # a report renewed the lease meanwhile
            renewed[0] = time.perf_counter()
            answer = await self._post("heartbeat", f"/v1/trials/{trial}/heartbeat", body)
            if answer is not None and answer.status_code == 409:
                return

    async def _post(self, kind: str, path: str, body: dict[str, Any]) -> httpx.Response | None:
        """POST and record it; the answer (2xx or not), or None when none came."""
        started = time.perf_counter()
        try:
            response = await self.http.post(path, json=body)
        except httpx.HTTPError as failure:
            self._record(kind, started, type(failure).__name__)
            return None
        error = None if response.is_success else f"{response.status_code} {response.text[:120]}"
        self._record(kind, started, error)
        return response

    def _record(self, kind: str, started: float, error: str | None) -> None:
        self.samples.append(Sample(kind, started, time.perf_counter() - started, error))

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if the run stopped meanwhile."""
        return await _wait(self.stop, max(0.0, seconds))


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` was set within ``seconds``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def simulate(url: str, token: str, workers: int, load: Load, service_pid: int) -> Result:
    limits = httpx.Limits(max_connections=2 * workers, max_keepalive_connections=2 * workers)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=load.timeout_s, limits=limits
    ) as http:
        swarm = Swarm(http, load)
        begin = time.perf_counter()
        tasks = [
            asyncio.create_task(swarm.run_worker(f"sim-{i}", begin + load.ramp_s * i / workers))
            for i in range(workers)
        ]
        start = begin + load.ramp_s
        await asyncio.sleep(start - time.perf_counter())
        cpu0, service0 = time.process_time(), _cpu_s(service_pid)
        await asyncio.sleep(load.seconds)
        cpu1, service1 = time.process_time(), _cpu_s(service_pid)
        end = start + load.seconds
        # Requests on the wire finish (within the timeout) so the slowest are not dropped.
        swarm.stop.set()
        finished, late = await asyncio.wait(tasks, timeout=load.timeout_s + 5)
        for task in late:
            task.cancel()
        for task in finished:
            error = task.exception()
            if error is not None:  # a bug in this bench: never hide it
                raise error
    counted = [s for s in swarm.samples if start <= s.started < end]
    service_cpu = None
    if service0 is not None and service1 is not None:
        service_cpu = (service1 - service0) / load.seconds
    return Result(
        workers=workers,
        offered=workers * load.requests_per_worker_s(),
        served=sum(s.error is None for s in counted) / load.seconds,
        latency={k: [s.latency_s for s in counted if s.kind == k] for k in KINDS},
        errors=Counter((s.kind, s.error) for s in counted if s.error is not None),
        client_cpu=(cpu1 - cpu0) / load.seconds,
        service_cpu=service_cpu,
    )


@contextlib.contextmanager
def serve(directory: Path, lease_s: float) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``hps serve`` on a fresh SQLite file in ``directory``; stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HPS_DATABASE_URL": f"sqlite:///{directory / 'hps.db'}",
        "HPS_TOKEN_FILE": str(directory / "hps.token"),
        "HPS_LEASE_SECONDS": str(lease_s),
    }
    env.pop("HPS_TOKEN", None)
    command = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
    with (directory / "hps.log").open("wb") as log:
        server = subprocess.Popen(command, env=env, cwd=directory, stdout=log, stderr=log)
        try:
            await_health(url, server)
            yield url, server
        finally:
            stop([server])


def run(workers: int, load: Load) -> Result:
    """One worker count against a fresh service and database."""
    with tempfile.TemporaryDirectory(prefix="hps-scale-") as tmp:
        directory = Path(tmp)
        with serve(directory, load.lease_s) as (url, server):
            return _run(directory, url, server, workers, load)


def _run(
    directory: Path, url: str, server: subprocess.Popen[bytes], workers: int, load: Load
) -> Result:
    with Client(url, token=(directory / "hps.token").read_text().strip()) as admin:
        admin.submit(
            {
                "name": "scale",
                "workload": {"name": "postln_transformer"},
                "n_trials": 100_000,
                "seeds_per_trial": 1,
                "sampler": {"type": "random", "seed": 0},
                "search_space": SPACE,
            }
        )
        token = admin.create_token("scale-bench", [Scope.WORKER]).token
    result = asyncio.run(simulate(url, token, workers, load, server.pid))
    if result.error_count():
        log = (directory / "hps.log").read_text(errors="replace")
        result.log_tail = "\n".join(log.splitlines()[-15:])
    return result


def _raise_file_limit(needed: int) -> None:
    """Each connection is a file descriptor: raise the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def report(load: Load, results: list[Result]) -> None:
    print(
        f"trial {load.trial_s:g} s, {REPORTS} reports, a heartbeat every {load.heartbeat_s:g} s "
        f"(HPS_LEASE_SECONDS={load.lease_s:g}): {load.requests_per_worker_s():.3f} requests/s "
        f"per worker; ramp {load.ramp_s:g} s, then {load.seconds:g} s measured"
    )
    print(
        f"{'workers':>7} {'offered/s':>9} {'served/s':>9} {'lease p50':>9} {'lease p99':>9} "
        f"{'all p50':>8} {'all p99':>8} {'errors':>6} {'client cpu':>10} {'service cpu':>11}"
    )
    for r in results:
        service = "n/a" if r.service_cpu is None else f"{r.service_cpu:.0%}"
        print(
            f"{r.workers:>7} {r.offered:>9.1f} {r.served:>9.1f} {_ms(r.p('lease', 50)):>9} "
            f"{_ms(r.p('lease', 99)):>9} {_ms(r.p(None, 50))} {_ms(r.p(None, 99))} "
            f"{r.error_count():>6} {r.client_cpu:>10.0%} {service:>11}"
        )
    print("\nby kind (ms): requests counted, p50, p99, errors")
    for r in results:
        parts = [
            f"{k} {len(r.latency[k])}, {r.p(k, 50) * 1000:.1f}, {r.p(k, 99) * 1000:.1f}, "
            f"{r.error_count(k)}"
            for k in KINDS
        ]
        print(f"{r.workers:>7}  " + " | ".join(parts))
    for r in results:
        for (kind, error), n in r.errors.most_common(5):
            print(f"  {r.workers} workers: {n} x {kind}: {error}")
        if r.log_tail:
            print(f"  the service's log ends:\n{r.log_tail}")
    largest = max(results, key=lambda r: r.workers)
    met = largest.p("lease", 99) < TARGET_P99_S and largest.error_count() == 0
    print(
        f"\ntarget ({TARGET_WORKERS} workers: p99 lease < {TARGET_P99_S * 1000:.0f} ms, 0 errors): "
        f"{'met' if met else 'NOT met'} at {largest.workers} workers"
        + ("" if largest.workers >= TARGET_WORKERS else f", but it is set for {TARGET_WORKERS}")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured, after the ramp")
    parser.add_argument("--trial-seconds", type=float, default=60.0, help="one simulated trial")
    parser.add_argument("--lease-seconds", type=float, default=30.0, help="HPS_LEASE_SECONDS")
    parser.add_argument("--ramp", type=float, default=None, help="default: one trial")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    args = parser.parse_args()
    load = Load(
        trial_s=args.trial_seconds,
        lease_s=args.lease_seconds,
        ramp_s=args.trial_seconds if args.ramp is None else args.ramp,
        seconds=args.seconds,
        timeout_s=args.timeout,
    )
    if load.ramp_s < load.trial_s:
        print("note: a ramp shorter than a trial bunches the leases: the window may miss them")
    _raise_file_limit(2 * max(args.workers) + 256)
    results = []
    for workers in args.workers:
        results.append(run(workers, load))
        print(f"... {workers} workers done", flush=True)
    report(load, results)


if __name__ == "__main__":
    main()
