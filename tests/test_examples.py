"""Every example spec is a valid study: a user copying one never meets a 422."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from api_schemas import StudySpec

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert any(path.name == "quickstart.yaml" for path in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_study(path: Path) -> None:
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.n_trials is not None and spec.n_trials >= 1
