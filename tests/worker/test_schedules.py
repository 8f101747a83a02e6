"""The warmup schedule against its closed form, on the lr each optimizer step actually used."""

from __future__ import annotations

import pytest
import torch

from worker.schedules import linear_warmup


def _lrs_used(warmup_steps: int, n_steps: int, lr: float = 0.5) -> list[float]:
    """The lr in force at optimizer steps 1..n_steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = linear_warmup(optimizer, warmup_steps)
    used = []
    for _ in range(n_steps):
        used.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(1)
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize("warmup_steps", [1, 2, 5, 10])
def test_linear_warmup_matches_closed_form(warmup_steps: int) -> None:
    used = _lrs_used(warmup_steps, n_steps=15)
    expected = [0.5 * min(1.0, t / warmup_steps) for t in range(1, 16)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert used[0] > 0  # step 1 is not wasted at lr 0


def test_no_warmup_is_constant() -> None:
    assert _lrs_used(0, n_steps=5) == [0.5] * 5


def test_negative_warmup_is_rejected() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_warmup(optimizer, -1)
