"""``bounds.gap`` in slices gives, bit for bit, what it gives over all pairs at once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from api_schemas.analysis import CONFIDENCE
from service.analysis import bounds
from service.analysis.bounds import Floats, Gap


def dense_gap(x: Floats, y: Floats, level: float = CONFIDENCE) -> Gap:
    """``gap`` as it was before it was sliced: every pair in one array."""
    seeds = x.shape[-1]
    x_ok = np.asarray(~np.isnan(x).any(axis=-1), dtype=bool)
    y_ok = np.asarray(~np.isnan(y).any(axis=-1), dtype=bool)
    d = x[..., :, None, :] - y[..., None, :, :]
    with np.errstate(invalid="ignore"):
        mean = d.mean(axis=-1)
        se = d.std(axis=-1, ddof=1) / math.sqrt(seeds) if seeds > 1 else np.full_like(mean, np.nan)
    valid = x_ok[..., :, None] & y_ok[..., None, :]
    ok = x_ok.any(axis=-1) & y_ok.any(axis=-1)

    def min_max(values: Floats) -> Floats:
        inner = np.where(valid, values, -np.inf).max(axis=-1)
        return np.asarray(np.where(x_ok, inner, np.inf).min(axis=-1), dtype=np.float64)

    def max_min(values: Floats) -> Floats:
        inner = np.where(valid, values, np.inf).min(axis=-2)
        return np.asarray(np.where(y_ok, inner, -np.inf).max(axis=-1), dtype=np.float64)

    estimate = min_max(mean)
    if seeds < 2:
        nan = np.full(estimate.shape, np.nan)
        return Gap(np.where(ok, estimate, np.nan), nan, nan.copy(), seeds)
    upper_t = bounds._critical(seeds, x_ok.sum(axis=-1), level)[..., None, None]
    lower_t = bounds._critical(seeds, y_ok.sum(axis=-1), level)[..., None, None]
    return Gap(
        estimate=np.where(ok, estimate, np.nan),
        low=np.where(ok, max_min(mean - lower_t * se), np.nan),
        high=np.where(ok, min_max(mean + upper_t * se), np.nan),
        seeds=seeds,
    )


def cells(rng: np.random.Generator, shape: tuple[int, ...], missing: float) -> Floats:
    """Losses with near ties, failures at a common chance loss, and cells not run (NaN)."""
    loss = np.round(rng.normal(1.0, 0.1, shape), 2)  # rounded: many exact ties
    loss = np.where(rng.random(shape) < 0.1, math.log(32), loss)
    return np.where(rng.random((*shape[:-1], 1)) < missing, np.nan, loss)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
@pytest.mark.parametrize("seeds", [1, 2, 5, 8, 13])
@pytest.mark.parametrize(
    ("x_shape", "y_shape"),
    [
        ((6,), (30,)),  # one arm's regret: its w=0 lrs against all its cells
        ((4, 6), (4, 30)),  # per arm
        ((50, 3, 6), (50, 3, 30)),  # a batch of simulated studies
        ((4, 6, 1), (4, 6, 5)),  # per lr: one cell against each warmup
        ((1, 6), (3, 6)),  # batch shapes that broadcast
    ],
)
def test_sliced_gap_is_the_dense_gap_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    seeds: int,
    x_shape: tuple[int, ...],
    y_shape: tuple[int, ...],
) -> None:
    rng = np.random.default_rng(seeds * 1000 + chunk)
    x = cells(rng, (*x_shape, seeds), missing=0.2)
    y = cells(rng, (*y_shape, seeds), missing=0.2)
    y[..., : x.shape[-2], :] = x  # x's cells are among y's, as in a regret
    monkeypatch.setattr(bounds, "CHUNK", chunk)
    got, want = bounds.gap(x, y), dense_gap(x, y)
    for field in ("estimate", "low", "high"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), strict=True)
    assert got.seeds == want.seeds


@pytest.mark.parametrize("seeds", [2, 5, 8])
@pytest.mark.parametrize("missing", [0.0, 0.3])
@pytest.mark.parametrize(
    ("x_shape", "y_shape"), [((40,), (200,)), ((3, 40), (3, 200)), ((1, 1), (2, 9))]
)
def test_pruned_gap_is_the_dense_gap_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
    seeds: int,
    missing: float,
    x_shape: tuple[int, ...],
    y_shape: tuple[int, ...],
) -> None:
    """Many cells: the pairs that cannot decide a bound are skipped, the bounds unchanged."""
    rng = np.random.default_rng(seeds + int(missing * 10))
    x = cells(rng, (*x_shape, seeds), missing=missing)
    y = cells(rng, (*y_shape, seeds), missing=missing)
    y[..., : x.shape[-2], :] = x
    monkeypatch.setattr(bounds, "PRUNE_PAIRS", 1)
    monkeypatch.setattr(bounds, "PILOTS", 3)
    monkeypatch.setattr(bounds, "CHUNK", 64)
    got, want = bounds.gap(x, y), dense_gap(x, y)
    for field in ("estimate", "low", "high"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), strict=True)


def test_a_gap_with_every_cell_missing_on_one_side_is_nan_when_pruned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    x, y = cells(rng, (2, 30, 4), missing=0.0), cells(rng, (2, 50, 4), missing=0.0)
    x[0] = np.nan
    monkeypatch.setattr(bounds, "PRUNE_PAIRS", 1)
    got, want = bounds.gap(x, y), dense_gap(x, y)
    assert math.isnan(got.estimate[0]) and math.isfinite(got.estimate[1])
    np.testing.assert_array_equal(got.high, want.high)
