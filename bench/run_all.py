"""Every benchmark, one after another, each under its own heading.

Each runs in its own process with its default arguments: the full sizes, about half an hour on
a small machine. ``--quick`` passes small sizes to each instead, so the whole set runs in a few
minutes: a check that they all work, not figures to record. Name benchmarks to run only those.
The exit code is 1 if any of them failed.

    python bench/run_all.py [--quick] [worker_overhead service_throughput analysis_bench ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

QUICK: dict[str, list[str]] = {
    "worker_overhead": ["--trials", "1", "--steps", "50"],
    # Both backends, every side: one round of 2 s each, after a 2 s warm-up each.
    "service_throughput": ["--rounds", "1", "--seconds", "2"],
    "call_costs": ["--lifecycles", "20"],
    "analysis_bench": ["--sizes", "200", "--seeds", "2", "--repeats", "1"],
    "growth": ["--sizes", "100", "1000", "--leases", "20", "--analyses", "1"],
    "oversized_grid": ["--seconds", "1"],
    # 40 workers with 15 s trials send about 27 requests/s: within what a 2-core machine serves.
    "scale": [
        *("--workers", "10", "40", "--seconds", "10"),
        *("--trial-seconds", "15", "--lease-seconds", "15"),
    ],
}
"""Every benchmark, in the order they run, with its ``--quick`` arguments."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(QUICK)}; default: all")
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in QUICK]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; there are {', '.join(QUICK)}")
    # The benchmarks import hps's packages: from this checkout, installed or not.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    failed = []
    for name in args.names or list(QUICK):
        extra = QUICK[name] if args.quick else []
        print(f"\n## {name}: python {' '.join([f'bench/{name}.py', *extra])}", flush=True)
        start = time.monotonic()
        command = [sys.executable, str(BENCH / f"{name}.py"), *extra]
        code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
        took = time.monotonic() - start
        print(f"({name}: {took:.0f} s{'' if code == 0 else f', FAILED with exit code {code}'})")
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
