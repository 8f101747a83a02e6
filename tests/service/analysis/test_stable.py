"""The stable lr range: lr50 from isotonic failure rates, censoring, and G's paired interval."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.stable import isotonic, lr50, stable_ranges
from tests.service.analysis import simulate

LOG_LRS = np.log(np.asarray(simulate.LRS))


def test_isotonic_pools_adjacent_violators_and_keeps_monotone_rates() -> None:
    rates = np.array([[0, 0.5, 0.25, 1.0], [0, 0.25, 0.75, 1], [1, 0, 0, 0]])
    assert isotonic(rates) == pytest.approx(
        np.array([[0, 0.375, 0.375, 1], [0, 0.25, 0.75, 1], [0.25, 0.25, 0.25, 0.25]])
    )


def test_lr50_interpolates_in_log_lr_and_is_censored_beyond_the_grid() -> None:
    rates = np.array([[0, 0.25, 0.75, 1], [0, 0, 0, 0.25], [0.5, 1, 1, 1]])
    got = lr50(rates, LOG_LRS)
    assert np.exp(got[0]) == pytest.approx(np.sqrt(3e-3 * 1e-2))  # halfway, in log lr
    assert got[1] == np.inf and got[2] == -np.inf


def test_g_measures_how_far_warmup_moves_the_failure_threshold() -> None:
    rng = np.random.default_rng(0)
    means = simulate.truth(1.0, 0.0)
    means[:, 2, 0] = simulate.CHANCE  # without warmup lr 1e-2 fails too: one grid step lower
    o = simulate.outcomes(rng, means, 8)
    ranges = stable_ranges(o, resamples=500)
    assert ranges is not None
    # With warmup half the seeds fail between 1e-2 and 3e-2; without, between 3e-3 and 1e-2.
    assert np.exp(ranges.log_lr50[0, 0, 0]) == pytest.approx(np.sqrt(3e-3 * 1e-2))
    assert np.exp(ranges.log_lr50[0, 0, 1]) == pytest.approx(np.sqrt(1e-2 * 3e-2))
    estimate, low, high = ranges.gain[:, 0]
    assert estimate == pytest.approx(np.log2(np.sqrt(1e-2 * 3e-2) / np.sqrt(3e-3 * 1e-2)))
    assert low <= estimate <= high and low > 0
    assert o.warmups[int(ranges.best_warmup[0])] == "50"  # the first warmup reaching that


def test_no_second_lr_or_no_w0_has_no_stable_range() -> None:
    rng = np.random.default_rng(1)
    o = simulate.outcomes(rng, simulate.truth(1.0, 0.0), 4)
    o.warmups = ["10", "50", "100"]
    assert stable_ranges(o, resamples=100) is None
