"""Cross-fitted regret and its paired seed bootstrap, against planted regrets."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis import regret
from service.analysis.cells import Outcomes
from service.analysis.estimates import Resampling, estimate
from tests.service.analysis import simulate


def test_split_weights_keep_copies_of_a_seed_on_one_side() -> None:
    rng = np.random.default_rng(0)
    counts = rng.multinomial(6, np.full(6, 1 / 6), size=200).astype(np.int64)
    w = regret.split_weights(counts, 3, rng)
    ok = np.isfinite(w.choose).all(axis=-1)
    assert ok.mean() > 0.95  # only resamples of a single seed have no split
    assert np.allclose(w.choose[ok].sum(axis=-1), 1) and np.allclose(w.measure[ok].sum(-1), 1)
    assert not np.any((w.choose[ok] > 0) & (w.measure[ok] > 0))  # disjoint halves
    # A seed's weight is proportional to how often the resample drew it.
    row, split = np.argwhere(ok)[0]
    side = w.choose[row, split] > 0
    expected = counts[row] * side / (counts[row] * side).sum()
    assert np.allclose(w.choose[row, split], expected)


def test_crossfit_is_not_fooled_by_noise_where_the_naive_estimate_is() -> None:
    """No warmup effect at all and many cells: the naive regret is the winner's curse."""
    rng = np.random.default_rng(1)
    flat = np.full((1, 6, 5), 0.5)
    naive, crossfit = [], []
    for _ in range(100):
        o = simulate.outcomes(rng, flat, seeds=6, noise=0.1, seed_sd=0.0)
        w0 = np.asarray([w == "0" for w in ["0", "50", "100", "150", "200"]])
        e = estimate(_five_warmups(o), Resampling.draw(6, 200, seed=int(rng.integers(1 << 30))))
        assert e is not None
        naive.append(regret.naive_best(o.loss, w0)[0] - regret.naive_best(o.loss, ~w0 | w0)[0])
        crossfit.append(e.regret.point[0])
    # E[min of 6 means] - E[min of 30 means] with sd 0.1 / sqrt(6): about 0.03.
    assert np.mean(naive) > 0.02
    assert abs(np.mean(crossfit)) < 0.005, np.mean(crossfit)


def _five_warmups(o: Outcomes) -> Outcomes:
    o.warmups = ["0", "50", "100", "150", "200"]
    o.lrs = np.geomspace(1e-3, 3e-2, o.loss.shape[1])
    return o


@pytest.mark.parametrize(("seeds", "low", "high"), [(8, 0.91, 0.99), (16, 0.91, 0.99)])
def test_bootstrap_interval_covers_the_planted_regret_at_about_95_percent(
    seeds: int, low: float, high: float
) -> None:
    rng = np.random.default_rng(seeds)
    means = simulate.truth(regret_adam=0.4, regret_radam=0.1)
    planted = simulate.true_regret(means)
    covered = np.zeros(2)
    n = 200
    for i in range(n):
        o = simulate.outcomes(rng, means, seeds)
        e = estimate(o, Resampling.draw(seeds, 500, seed=i))
        assert e is not None
        for arm in range(2):
            interval = e.regret.arm(arm, seeds)
            assert interval is not None
            covered[arm] += interval.low <= planted[arm] <= interval.high
    assert low <= covered.min() / n and covered.max() / n <= high, covered / n


def test_a_cell_never_run_is_never_chosen() -> None:
    rng = np.random.default_rng(2)
    means = simulate.truth(0.4, 0.0)
    o = simulate.outcomes(rng, means, seeds=6)
    o.loss[:, 2, 1, :] = np.nan  # the best cell overall was not run (yet)
    e = estimate(o, Resampling.draw(6, 200))
    # Chosen, the missing cell would be measured as NaN.
    assert e is not None and np.all(np.isfinite(e.best.point)) and np.all(np.isfinite(e.best.boot))


def test_without_w0_or_with_one_seed_there_is_no_estimate() -> None:
    rng = np.random.default_rng(3)
    o = simulate.outcomes(rng, simulate.truth(0.4, 0.0), seeds=1)
    assert estimate(o, Resampling.draw(1, 200)) is None
    o = simulate.outcomes(rng, simulate.truth(0.4, 0.0), seeds=4)
    o.warmups = ["10", "50", "100"]
    assert estimate(o, Resampling.draw(4, 200)) is None
