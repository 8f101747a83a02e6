"""A grid study with a control, trained by real workers, analysed through ``hps report``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api_schemas.analysis import Analysis
from service.report import FIGURES
from tests.e2e.conftest import TINY_WORKLOAD, Service

pytestmark = pytest.mark.e2e

TINY_MLP = {"name": "digits_mlp", "config": {"hidden": [16], "steps": 40, "report_every": 10}}
SPEC: dict[str, Any] = {
    "name": "e2e-verdict",
    "workload": TINY_WORKLOAD,
    "controls": [{"role": "negative", "label": "mlp", "workload": TINY_MLP}],
    "sampler": {"type": "grid"},
    "seeds_per_trial": 2,
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
        "warmup_steps": {"type": "categorical", "choices": [0, 10]},
        "beta2": {"type": "fixed", "value": 0.98},
    },
}


def test_a_grid_study_is_analysed_and_reported_through_the_cli(
    service: Service, tmp_path: Path
) -> None:
    with service.client() as client:
        study = client.submit(SPEC)
        workers = [service.start_worker("--burst"), service.start_worker("--burst")]
        for worker in workers:
            assert worker.wait(timeout=240) == 0
        assert client.study(study.id).state == "finished"

    page, figures = tmp_path / "report.html", tmp_path / "figures"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hps",
            "report",
            str(study.id),
            "--url",
            service.url,
            "--json",
            "--html",
            str(page),
            "--figures",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=service.cli_env,
    )
    assert done.returncode == 0, done.stderr
    analysis = Analysis.model_validate_json(done.stdout)
    assert analysis.design == "grid" and analysis.complete
    subject, mlp = analysis.workloads
    assert (subject.label, mlp.label, mlp.workload) == ("postln_transformer", "mlp", "digits_mlp")
    for workload in analysis.workloads:
        assert workload.counts.trials == 8 and workload.counts.seed_runs == 16
        assert [a.arm for a in workload.arms] == ["adam", "radam"]
        for arm in workload.arms:
            assert arm.regret is not None and arm.regret.low <= arm.regret.high
            assert arm.cells.warmups == ["0", "10"] and len(arm.curves) == 2
            assert [e.lr for e in arm.warmup_effect] == [1e-3, 1e-2]
            assert [r.warmup for r in arm.stable_range] == ["0", "10"]
        (pair,) = workload.pairs
        assert pair.gap is not None and pair.gap.low <= pair.gap.estimate <= pair.gap.high
        assert len(pair.failures_by_lr) == 2
    # Two seeds are too few for the interval to be trusted, but every part is there.
    assert analysis.verdict is not None or analysis.verdict_unavailable
    assert analysis.statement

    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == len(FIGURES)
    n = len(FIGURES)
    assert sorted(p.suffix for p in figures.iterdir()) == [".png"] * n + [".svg"] * n

    text = subprocess.run(
        [sys.executable, "-m", "hps", "report", str(study.id), "--url", service.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=service.cli_env,
    )
    assert text.returncode == 0, text.stderr
    assert "regret" in text.stdout and "postln_transformer" in text.stdout
    assert "RAdam against tuned Adam" in text.stdout and "stable lr range" in text.stdout
