"""deploy/slurm/hps-worker.sbatch run as Slurm runs it: as bash, with the ``SLURM_*`` variables
of an array task, against a real ``hps serve``. Tasks complete trials; Slurm's SIGTERM, sent
to the script alone (``--signal=B:TERM``), reaches the worker, which hands its trial back."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api_schemas import TrialState
from tests.e2e.conftest import TINY_WORKLOAD, Service, environment
from tests.e2e.test_end_to_end import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "slurm" / "hps-worker.sbatch"


def spec(name: str, n_trials: int, steps: int) -> dict[str, Any]:
    return {
        "name": name,
        "workload": {**TINY_WORKLOAD, "config": {**TINY_WORKLOAD["config"], "steps": steps}},
        "n_trials": n_trials,
        "seeds_per_trial": 1,
        "sampler": {"type": "random", "seed": 0},
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam"]},
            "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    }


def array_task(service: Service, task: int, log: Path, **variables: str) -> subprocess.Popen[str]:
    """``sbatch``'s task ``task`` of array job 4242: the script under bash, on the CPU."""
    env = environment(
        SLURM_JOB_ID=str(4242 + task),
        SLURM_ARRAY_JOB_ID="4242",
        SLURM_ARRAY_TASK_ID=str(task),
        SLURM_CPUS_PER_TASK="1",
        HPS_URL=service.url,
        HPS_TOKEN=service.worker_token,
        HPS=shlex.join([sys.executable, "-m", "hps"]),
        HPS_DEVICE="cpu",  # the script's default is cuda (--gres=gpu:1)
        **variables,
    )
    out = log.open("w")
    return subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=out, stderr=out, text=True)


def test_the_script_asks_slurm_for_an_array_of_one_gpu_tasks_and_an_early_sigterm() -> None:
    directives = [line.split()[1] for line in SCRIPT.read_text().splitlines() if "#SBATCH" in line]
    assert any(d.startswith("--array=0-") and "%" in d for d in directives)
    assert "--gres=gpu:1" in directives
    assert "--signal=B:TERM@120" in directives  # to the script, 120 s before the time limit
    assert os.access(SCRIPT, os.X_OK)


def test_array_tasks_complete_the_study_and_exit_when_it_is_done(
    service: Service, tmp_path: Path
) -> None:
    with service.client() as client:
        study = client.submit(spec("slurm", n_trials=4, steps=40))
        tasks = [array_task(service, i, tmp_path / f"task{i}.out") for i in (0, 1)]
        for i, task in enumerate(tasks):
            assert task.wait(timeout=240) == 0, (tmp_path / f"task{i}.out").read_text()
        trials = client.trials(study.id)
        assert client.study(study.id).state == "finished"
    assert [t.state for t in trials] == [TrialState.COMPLETED] * 4
    log = (tmp_path / "task1.out").read_text()
    assert "array task 1 of job 4242" in log and "cpu, 1 thread(s)" in log


def test_slurm_s_sigterm_to_the_script_hands_the_running_trial_back(
    service: Service, tmp_path: Path
) -> None:
    log = tmp_path / "task0.out"
    with service.client() as client:
        study = client.submit(spec("slurm-sigterm", n_trials=1, steps=100_000))
        task = array_task(service, 0, log)

        def reported() -> bool:
            trials = client.trials(study.id)
            return bool(trials) and trials[0].last_step is not None

        wait_for(reported, 120, "the first report")
        task.send_signal(signal.SIGTERM)  # the batch shell only, as --signal=B:TERM does
        assert task.wait(timeout=60) == 0, log.read_text()
        first, *rest = client.trials(study.id)

    assert first.state == TrialState.FAILED
    assert first.failure is not None and first.failure.kind == "interrupted"
    assert "SIGTERM" in first.failure.message
    assert [(t.state, t.params, t.attempt) for t in rest] == [(TrialState.WAITING, first.params, 2)]
    assert "passing it on to the worker" in log.read_text()


def test_without_a_token_the_script_says_what_to_set(tmp_path: Path) -> None:
    env = environment(HPS_URL="http://127.0.0.1:9")
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "set HPS_TOKEN or HPS_TOKEN_FILE" in done.stderr
