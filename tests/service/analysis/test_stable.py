"""The stable lr range: lr50 from isotonic failure rates, censoring, and G's paired interval."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.stable import lr50, stable_ranges
from tests.service.analysis import simulate

LOG_LRS = np.log(np.asarray(simulate.LRS))


def isotonic(rates: list[float]) -> list[float]:
    """Pool adjacent violators, written plainly: the reference the fast lr50 is checked on."""
    blocks: list[list[float]] = []
    for r in rates:
        blocks.append([r, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [b[0] / b[1] for b in blocks for _ in range(int(b[1]))]


def slow_lr50(rates: list[float], log_lrs: list[float]) -> float:
    fit = isotonic(rates)
    k = next((i for i, f in enumerate(fit) if f >= 0.5 - 1e-12), None)
    if k is None:
        return np.inf
    if k == 0:
        return -np.inf
    share = 1.0 if fit[k] == fit[k - 1] else (0.5 - fit[k - 1]) / (fit[k] - fit[k - 1])
    return log_lrs[k - 1] + share * (log_lrs[k] - log_lrs[k - 1])


def test_lr50_is_the_crossing_of_the_isotonic_fit_on_random_rates() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(2, 10))
        rates = rng.choice([0, 0.125, 0.25, 0.5, 0.6, 0.75, 1.0], size=n)
        log_lrs = np.cumsum(rng.random(n) + 0.1)
        got = lr50(rates[None], log_lrs)[0]
        assert got == pytest.approx(slow_lr50(list(rates), list(log_lrs))), rates


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
