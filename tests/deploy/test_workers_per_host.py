"""Several workers on one host, with real processes against a real service: ``hps worker
--processes 2`` runs two CPU workers with half the cores each and stops them together, and a
worker without ``--threads`` next to another says so in its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from api_schemas import TrialState
from tests.deploy.test_slurm import spec
from tests.e2e.conftest import Service, environment
from tests.e2e.test_end_to_end import wait_for

pytestmark = pytest.mark.e2e

HPS = [sys.executable, "-m", "hps"]


def test_processes_run_two_cpu_workers_with_their_share_of_the_cores(
    service: Service, tmp_path: Path
) -> None:
    log = tmp_path / "workers.log"
    with service.client() as client:
        study = client.submit(spec("processes", n_trials=4, steps=40))
        with log.open("w") as out:
            done = subprocess.run(
                [*HPS, "worker", "--url", service.url, "--processes", "2", "--burst"],
                env=environment(HPS_TOKEN=service.worker_token),
                stdout=out,
                stderr=out,
                timeout=240,
            )
        trials = client.trials(study.id)
    text = log.read_text()
    assert done.returncode == 0, text
    assert [t.state for t in trials] == [TrialState.COMPLETED] * 4
    share = max(1, (os.cpu_count() or 1) // 2)
    assert f"starting 2 CPU worker(s) with {share} thread(s) each" in text
    # Each child prints its summary as it exits: two workers, two pids, on the CPU.
    pids = set(re.findall(r"<Worker [^:\s]+:(\d+) on cpu: \d+ done", text))
    assert len(pids) == 2, text
    assert "other hps worker(s) run on this host" not in text  # each child has --threads


def test_sigterm_to_processes_stops_every_child(service: Service, tmp_path: Path) -> None:
    log = tmp_path / "workers.log"
    with service.client() as client:
        study = client.submit(spec("processes-sigterm", n_trials=2, steps=100_000))
        with log.open("w") as out:
            parent = subprocess.Popen(
                [*HPS, "worker", "--url", service.url, "--processes", "2", "--poll", "0.2"],
                env=environment(HPS_TOKEN=service.worker_token),
                stdout=out,
                stderr=out,
            )

        def both_running() -> bool:
            trials = client.trials(study.id)
            return sum(t.last_step is not None for t in trials) == 2

        wait_for(both_running, 120, "two trials reporting")
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0, log.read_text()
        interrupted = [t for t in client.trials(study.id) if t.state == TrialState.FAILED]
    assert len(interrupted) == 2
    assert all(t.failure is not None and t.failure.kind == "interrupted" for t in interrupted)


def test_a_worker_without_threads_next_to_another_says_so(service: Service, tmp_path: Path) -> None:
    service.start_worker()  # --threads 1; waits for work
    log = tmp_path / "plain.log"
    with log.open("w") as out:
        # No study: with --burst it exits as soon as it has asked once.
        done = subprocess.run(
            [*HPS, "worker", "--url", service.url, "--burst", "--device", "cpu"],
            env=environment(HPS_TOKEN=service.worker_token),
            stdout=out,
            stderr=out,
            timeout=120,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "other hps worker(s) run on this host" in text
    assert str(service.workers[0].pid) in text or ", ..." in text
