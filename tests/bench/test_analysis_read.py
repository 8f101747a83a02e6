"""The analysis the route computes (``Studies.analyse``: the trial table and the shown curves
read by SQL) is the analysis of the study's Optuna trials, byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna

from service.analysis import analyse
from service.store import Store
from service.studies import Studies

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import analysis_bench
import growth


def test_the_routes_read_gives_the_analysis_of_the_optuna_trials(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = analysis_bench.spec_for(400, 3)  # 5 lrs: 400 cells
    url = f"sqlite:///{tmp_path / 'hps.db'}"
    study_id = growth.fill(url, spec, 300)  # 300 finished (a few pruned, failed), 100 queued
    store = Store(url)
    try:
        studies = Studies(store)
        handle = studies.handle(study_id)
        routed = studies.analyse(study_id)
        direct = analyse(handle.id, handle.name, handle.spec, store.trials(study_id))
    finally:
        store.close()
    assert routed.workloads[0].counts.pending == 100
    assert any(arm.curves and arm.curves[0].steps for arm in routed.workloads[0].arms)
    routed.seconds = direct.seconds = 0.0
    assert routed.model_dump_json() == direct.model_dump_json()
