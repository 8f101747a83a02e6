"""Wilson intervals against values computed by hand (and by statsmodels' proportion_confint)."""

from __future__ import annotations

import pytest

from service.analysis.rates import wilson


@pytest.mark.parametrize(
    ("failures", "runs", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 40, 0.0044, 0.1289)],
)
def test_wilson_interval(failures: int, runs: int, low: float, high: float) -> None:
    rate = wilson(failures, runs)
    assert rate.rate == pytest.approx(failures / runs)
    assert rate.low == pytest.approx(low, abs=1e-4)
    assert rate.high == pytest.approx(high, abs=1e-4)


def test_no_runs_is_no_rate() -> None:
    rate = wilson(0, 0)
    assert rate.rate is None and (rate.low, rate.high) == (0.0, 1.0)
