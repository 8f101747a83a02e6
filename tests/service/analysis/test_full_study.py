"""The full study's stored trials, analysed again, give the analysis stored beside them.

``docs/full_study/*/`` holds each part's trials as ``GET /v1/studies/{id}/trials`` gave them
(``trials.json.gz``) and its analysis as the service gave it then (``analysis.json``). The
analysis of those trials must not move when the analysis's code is made faster: everything is
compared but the time it took and the learning curves' points, which the trials' file does not
hold (which trial's curve is shown, at which lr and warmup, is compared).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from api_schemas import StudySpec
from api_schemas.analysis import Analysis
from service import trials as tv
from service.analysis import analyse

ROOT = Path(__file__).resolve().parents[3]
PARTS = {
    "beta2_095": "full_study_beta2_095",
    "beta2_090": "full_study_beta2_090",
    "preln_extension": "full_study_preln_extension",
}
STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}


def frozen(row: dict[str, object]) -> FrozenTrial:
    """A trial of ``trials.json.gz`` (a TrialRead) as Optuna held it, curve aside."""
    params = row["params"]
    assert isinstance(params, dict)
    attrs: dict[str, object] = {tv.ATTR_SEEDS: row["seeds"], tv.ATTR_ATTEMPT: row["attempt"]}
    if row["failure"]:
        attrs[tv.ATTR_FAILURE] = row["failure"]
    trial = optuna.trial.create_trial(
        state=STATES[str(row["state"])],
        params=params,
        distributions={k: CategoricalDistribution([v]) for k, v in params.items()},
        value=row["value"],  # type: ignore[arg-type]
        user_attrs=attrs,
    )
    trial.number = int(row["number"])  # type: ignore[call-overload]
    return trial


@pytest.mark.parametrize("part", list(PARTS))
def test_the_stored_trials_give_the_stored_analysis(part: str) -> None:
    folder = ROOT / "docs" / "full_study" / part
    spec = StudySpec.model_validate(
        yaml.safe_load((ROOT / "examples" / f"{PARTS[part]}.yaml").read_text())
    )
    rows = json.loads(gzip.decompress((folder / "trials.json.gz").read_bytes()))
    stored = Analysis.model_validate_json((folder / "analysis.json").read_text())
    again = analyse(stored.study_id, stored.study_name, spec, [frozen(r) for r in rows])
    again.seconds = stored.seconds
    for workload, stored_workload in zip(again.workloads, stored.workloads, strict=True):
        for arm, stored_arm in zip(workload.arms, stored_workload.arms, strict=True):
            assert len(arm.curves) == len(stored_arm.curves)
            for curve, stored_curve in zip(arm.curves, stored_arm.curves, strict=True):
                assert curve.steps == [] and curve.loss == []  # not in the trials' file
                curve.steps, curve.loss = stored_curve.steps, stored_curve.loss
    assert again.model_dump_json() == stored.model_dump_json()
