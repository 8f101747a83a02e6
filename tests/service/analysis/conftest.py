"""Mutation check of the analysis's statistics: the simulation tests must catch a wrong one.

``HPS_ANALYSIS_MUTATION`` set to one of MUTATIONS changes every gap (and failure difference)
the analysis computes, for this test run only:

    shift+ / shift-   estimate and bounds moved by ±0.2·δ (δ of the calibration tests)
    narrow / widen    every interval's width scaled by 0.7 / 1.3 around its estimate

Each must make at least one test in this folder fail (the closing note of issue 12 shows it):

    HPS_ANALYSIS_MUTATION=narrow .venv/bin/python -m pytest tests/service/analysis
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from api_schemas.analysis import CONFIDENCE
from service.analysis import bounds, estimands
from tests.service.analysis.test_calibration import DELTA

MUTATIONS = {"shift+": (0.2, 1.0), "shift-": (-0.2, 1.0), "narrow": (0.0, 0.7), "widen": (0.0, 1.3)}


@pytest.fixture(autouse=True)
def analysis_mutation(monkeypatch: pytest.MonkeyPatch) -> None:
    name = os.environ.get("HPS_ANALYSIS_MUTATION")
    if not name:
        return
    shift, scale = MUTATIONS[name]
    shift *= DELTA
    gap, difference = bounds.gap, bounds.failure_difference

    def mutated_gap(x: bounds.Floats, y: bounds.Floats, level: float = CONFIDENCE) -> bounds.Gap:
        g = gap(x, y, level)
        e = g.estimate + shift
        return bounds.Gap(
            e, e - scale * (g.estimate - g.low), e + scale * (g.high - g.estimate), g.seeds
        )

    def mutated_difference(
        fx: bounds.Bools, fy: bounds.Bools, level: float = CONFIDENCE
    ) -> bounds.Difference:
        d = difference(fx, fy, level)
        return bounds.Difference(
            d.x_rate,
            d.y_rate,
            d.estimate,
            np.maximum(d.estimate - scale * (d.estimate - d.low), -1),
            np.minimum(d.estimate + scale * (d.high - d.estimate), 1),
        )

    for module in (bounds, estimands):
        monkeypatch.setattr(module, "gap", mutated_gap)
        monkeypatch.setattr(module, "failure_difference", mutated_difference)
