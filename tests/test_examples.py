"""Every example spec is a valid study: a user copying one never meets a 422."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from api_schemas import StudySpec
from hps.gate import GateSpec

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert any(path.name == "quickstart.yaml" for path in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_study_or_gate(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    if "checks" in data:  # a CI gate: its checks, and the study it runs
        data = GateSpec.model_validate(data).study
    spec = StudySpec.model_validate(data)
    assert spec.n_trials is not None and spec.n_trials >= 1
