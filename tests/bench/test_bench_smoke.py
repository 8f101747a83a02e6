"""The service benchmarks at tiny sizes, against the real service, so that they do not rot.

Each runs the script as ``bench/run_all.py`` runs it; the figures are not checked (this machine
is shared), only that every side ran and nothing failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, timeout: float) -> str:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    found = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    return found.stdout


def test_scale_workers_speak_http_without_errors() -> None:
    """The hand-written HTTP/1.1 client: every kind of request is sent, none fails."""
    out = _bench(
        "bench/scale.py",
        *("--workers", "4", "--seconds", "8", "--trial-seconds", "10", "--lease-seconds", "3"),
        timeout=120,
    )
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["4"])
    assert float(row[2]) > 0 and row[7] == "0", out  # served, errors
    counts = {kind: int(n) for kind, n in re.findall(r"(\w+) (\d+), ", out)}
    assert all(counts[kind] > 0 for kind in ("lease", "report", "heartbeat", "complete")), out


def test_throughput_runs_every_sqlite_side() -> None:
    out = _bench(
        "bench/service_throughput.py",
        *("--backend", "sqlite", "--rounds", "1", "--seconds", "1", "--clients", "2"),
        timeout=180,
    )
    assert "hps / raw: median" in out and "hps-b8 / raw: median" in out, out


def test_analysis_bench_builds_and_analyses_a_grid() -> None:
    out = _bench(
        "bench/analysis_bench.py",
        *("--sizes", "100", "--seeds", "2", "--repeats", "1", "--no-http"),
        timeout=180,
    )
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["80"])
    assert float(row[4]) > 0, out  # read + analysis


def test_route_costs_times_every_worker_route() -> None:
    out = _bench("bench/route_costs.py", "--trials", "16", timeout=120)
    costs = dict(line.split() for line in out.splitlines()[1:])
    routes = ["health", "lease", "report", "heartbeat", "complete"]
    assert set(costs) == {*routes, "lease-batch", "reports", "completions"}, out
    assert all(float(ms) >= 0 for ms in costs.values()), out
