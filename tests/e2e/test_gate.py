"""``hps gate`` end to end: real service, real workers, exit codes and a JUnit report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import JUnitXml

from tests.e2e.conftest import TINY_WORKLOAD, Service, environment

pytestmark = pytest.mark.e2e

HPS = [sys.executable, "-m", "hps"]
STUDY: dict[str, Any] = {
    "name": "gate",
    "workload": TINY_WORKLOAD,
    "seeds_per_trial": 2,
    "sampler": {"type": "grid"},
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "fixed", "value": 3e-3},
    },
}
ADAM = {"optimizer": "adam"}


def _gate(path: Path, checks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"study": STUDY, "checks": checks}))
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HPS, "gate", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_a_gate_that_holds_passes_locally(tmp_path: Path) -> None:
    gate = _gate(
        tmp_path / "pass.yaml",
        [
            {"name": "adam trains", "type": "failures", "where": ADAM, "at_most": 0.5},
            {"type": "loss", "where": ADAM, "at_most": 2.0},
            {"type": "best_arm", "in": ["adam", "radam"]},
        ],
    )
    junit, summary = tmp_path / "gate.xml", tmp_path / "gate.json"
    # --local: its own service and workers on a temporary SQLite file, nothing set up before.
    done = _run(
        str(gate), "--local", "--workers", "2", "--junit", str(junit), "--json", str(summary)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (suite,) = list(JUnitXml.fromfile(str(junit)))
    assert suite.tests == 3 and suite.failures == 0
    assert json.loads(summary.read_text())["passed"] is True


def test_a_gate_that_is_broken_fails_and_a_baseline_holds(service: Service, tmp_path: Path) -> None:
    service.start_worker()
    env = service.cli_env
    broken = _gate(
        tmp_path / "fail.yaml",
        [
            {"name": "adam collapses", "type": "failures", "where": ADAM, "at_least": 0.9},
            {"name": "adam trains", "type": "loss", "where": ADAM, "at_most": 2.0},
        ],
    )
    junit, summary = tmp_path / "fail.xml", tmp_path / "fail.json"
    done = _run(
        str(broken), "--url", service.url, "--junit", str(junit), "--json", str(summary), env=env
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (suite,) = list(JUnitXml.fromfile(str(junit)))
    results = {case.name: case.is_passed for case in suite}
    assert results == {"adam collapses": False, "adam trains": True}

    # The study it ran is the baseline for the next: training is deterministic on the CPU, so
    # the same gate reproduces the loss exactly.
    study_id = json.loads(summary.read_text())["study_id"]
    baseline = tmp_path / "baseline.json"
    baseline.write_text(
        subprocess.run(
            [*HPS, "trials", str(study_id), "--url", service.url, "--json"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
    )
    same = _gate(tmp_path / "same.yaml", [{"type": "loss", "where": ADAM, "within": 1e-9}])
    done = _run(str(same), "--url", service.url, "--baseline", str(baseline), env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_invalid_gate_is_an_error(tmp_path: Path) -> None:
    gate = _gate(tmp_path / "bad.yaml", [{"type": "loss", "where": ADAM}])
    done = _run(str(gate), "--local", env=environment())
    assert done.returncode == 2
    assert "checks.0.loss" in done.stderr and "needs at_most, within" in done.stderr
