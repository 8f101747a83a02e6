"""An oversized grid is refused at once, and the service stays responsive meanwhile (issue 16).

The real ``hps serve`` (``hps.local.launch``, no workers) on a fresh SQLite file. One thread
probes ``GET /v1/health`` back to back on its own connection the whole time; the main thread
submits a 10^8-cell grid spec (about 2 KB of JSON; before the fix it was built whole: minutes,
then a MemoryError) again and again for ``--seconds``. Printed: the refusal times, and the health
latencies while the submits ran, against the targets (both < 50 ms).

    python bench/oversized_grid.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from hps.local import free_port, launch

TARGET_S = 0.050


def spec() -> dict[str, object]:
    """A grid of 100 lrs x 10^6 warmups = 10^8 cells, in about 2 KB of JSON."""
    return {
        "name": "oversized",
        "workload": {"name": "postln_transformer"},
        "sampler": {"type": "grid"},
        "search_space": {
            "optimizer": {"type": "fixed", "value": "adam"},
            "lr": {"type": "categorical", "choices": [10.0**-i for i in range(1, 101)]},
            "warmup_steps": {"type": "int", "low": 0, "high": 10**6 - 1},
        },
    }


def _summary(name: str, seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    met = "met" if ms[-1] < 1000 * TARGET_S else "NOT met"
    return (
        f"{name}: n={len(ms)} median {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms (target < {1000 * TARGET_S:.0f} ms: {met})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "HPS_DATABASE_URL": f"sqlite:///{Path(tmp) / 'hps.db'}",
            "HPS_TOKEN_FILE": str(Path(tmp) / "hps.token"),
        }
        with launch(port=free_port(), workers=0, env=env, poll_s=1.0, cwd=Path(tmp)) as service:
            headers = {"Authorization": f"Bearer {service.token}"}
            health: list[float] = []
            stop = threading.Event()

            def probe() -> None:
                with httpx.Client(base_url=service.url) as client:
                    while not stop.is_set():
                        started = time.perf_counter()
                        client.get("/v1/health").raise_for_status()
                        health.append(time.perf_counter() - started)

            prober = threading.Thread(target=probe)
            prober.start()
            refusals: list[float] = []
            try:
                with httpx.Client(base_url=service.url, headers=headers, timeout=60) as client:
                    time.sleep(0.5)  # the prober's connection is warm
                    health.clear()
                    end = time.perf_counter() + args.seconds
                    while time.perf_counter() < end:
                        started = time.perf_counter()
                        response = client.post("/v1/studies", json=spec())
                        refusals.append(time.perf_counter() - started)
                        assert response.status_code == 422, response.text
            finally:
                stop.set()
                prober.join()
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(_summary("refusal of a 10^8-cell grid", refusals))
    print(_summary("GET /v1/health meanwhile", health))


if __name__ == "__main__":
    main()
