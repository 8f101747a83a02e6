"""The reference optimizers against per-element formulas (SCIENCE.md) and against torch.optim.

Every run is float64 on a noisy random quadratic over parameter tensors of different shapes; a
trajectory is the flattened parameters after each of steps 1..N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from worker.reference_optimizers import AdamWarmupReference, RAdamReference, radam_step_size

SHAPES = [(3,), (2, 4), (2, 1, 3)]
STEPS = 200
LR = 0.05
BETA2S = [0.9, 0.99, 0.999]
RHO_EXACTLY_5_AT_STEP_6 = 0.8397685748659791
"""A β2 at which rho_6 is exactly 5.0 in float64 (found by bisection): the thresholds split."""


class Quadratic:
    """``sum_i |A_i (x_i - c_i)|² / 2`` with Gaussian gradient noise that depends on the step."""

    def __init__(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        sizes = [math.prod(shape) for shape in SHAPES]
        self.start = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in SHAPES]
        self.targets = [torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]
        self.curvatures = [
            (a := torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5).T @ a
            for n in sizes
        ]
        self.seed = seed

    def grads(self, t: int, params: Sequence[Tensor]) -> list[Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + t)
        return [
            (
                h @ (p.detach().flatten() - c)
                + 0.1 * torch.randn(c.shape, generator=gen, dtype=c.dtype)
            ).reshape(p.shape)
            for p, h, c in zip(params, self.curvatures, self.targets, strict=True)
        ]


def run_torch(
    make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    problem: Quadratic,
    steps: int = STEPS,
    schedule: Callable[[int], float] | None = None,
) -> Tensor:
    """Trajectory of an optimizer, optionally under ``LambdaLR(schedule)``."""
    params = [torch.nn.Parameter(x.clone()) for x in problem.start]
    optimizer = make(params)
    scheduler = None if schedule is None else torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rows = []
    for t in range(1, steps + 1):
        for p, g in zip(params, problem.grads(t, params), strict=True):
            p.grad = g
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        rows.append(torch.cat([p.detach().flatten() for p in params]))
    return torch.stack(rows)


ElementUpdate = Callable[[float, float, float, float, int], tuple[float, float, float]]
"""``(p, g, m, v, t) -> (p, m, v)`` for one element at step t."""


def run_formula(update: ElementUpdate, problem: Quadratic, steps: int = STEPS) -> Tensor:
    """Trajectory of a per-element update written in plain Python floats."""
    params = [x.clone() for x in problem.start]
    flat = torch.cat([p.flatten() for p in params]).tolist()
    m = [0.0] * len(flat)
    v = [0.0] * len(flat)
    rows = []
    for t in range(1, steps + 1):
        grads = torch.cat([g.flatten() for g in problem.grads(t, params)]).tolist()
        for i, g in enumerate(grads):
            flat[i], m[i], v[i] = update(flat[i], g, m[i], v[i], t)
        rows.append(torch.tensor(flat, dtype=torch.float64))
        params = [r.reshape(shape) for r, shape in zip(_split(rows[-1]), SHAPES, strict=True)]
    return torch.stack(rows)


def _split(flat: Tensor) -> list[Tensor]:
    return list(torch.split(flat, [math.prod(shape) for shape in SHAPES]))


def rho(t: int, beta2: float) -> float:
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def radam_formula(beta2: float, eps: float, wd: float, sgd: bool) -> ElementUpdate:
    """RAdam from SCIENCE.md, with the repo's N_sma >= 5 and its eps outside the correction."""
    beta1 = 0.9

    def update(p: float, g: float, m: float, v: float, t: int) -> tuple[float, float, float]:
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho_inf, rho_t = 2 / (1 - beta2) - 1, rho(t, beta2)
        if rho_t >= 5:
            r = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            p -= LR * wd * p
            p -= LR * r * m_hat * math.sqrt(1 - beta2**t) / (math.sqrt(v) + eps)
        elif sgd:
            p -= LR * wd * p
            p -= LR * m_hat
        return p, m, v

    return update


def adam_warmup_formula(beta2: float, eps: float, wd: float, warmup: int) -> ElementUpdate:
    """The article's AdamWarmup, element by element."""
    beta1 = 0.9

    def update(p: float, g: float, m: float, v: float, t: int) -> tuple[float, float, float]:
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        lr = 1e-8 + t * LR / warmup if t < warmup else LR
        p -= wd * lr * p
        p -= lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (math.sqrt(v) + eps)
        return p, m, v

    return update


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


# --- RAdamReference ---------------------------------------------------------------------------


# Every β2 with both variants; weight decay on and off and a large eps spread over them.
@pytest.mark.parametrize(
    ("beta2", "sgd", "wd", "eps"),
    [
        (0.9, True, 0.0, 1e-8),
        (0.9, False, 0.1, 1e-3),
        (0.99, True, 0.1, 1e-8),
        (0.99, False, 0.0, 1e-8),
        (0.999, True, 0.1, 1e-3),
        (0.999, False, 0.1, 1e-8),
    ],
)
def test_radam_reference_matches_formula(beta2: float, sgd: bool, wd: float, eps: float) -> None:
    problem = Quadratic(seed=1)
    got = run_torch(
        lambda ps: RAdamReference(
            ps, lr=LR, betas=(0.9, beta2), eps=eps, weight_decay=wd, degenerated_to_sgd=sgd
        ),
        problem,
    )
    expected = run_formula(radam_formula(beta2, eps, wd, sgd), problem)
    assert max_diff(got, expected) <= 1e-10
    assert max_diff(got[-1], torch.cat([x.flatten() for x in problem.start])) > 1e-2


def differing_steps(beta2: float, steps: int = STEPS) -> list[int]:
    """Steps where the repo's ``N_sma >= 5`` and torch's ``rho_t > 5`` disagree: rho_t == 5."""
    return [t for t in range(1, steps + 1) if (rho(t, beta2) >= 5) != (rho(t, beta2) > 5)]


def torch_radam(beta2: float, wd: float, decoupled: bool) -> Callable[..., torch.optim.Optimizer]:
    return lambda ps: torch.optim.RAdam(
        ps, lr=LR, betas=(0.9, beta2), weight_decay=wd, decoupled_weight_decay=decoupled
    )


def radam_reference(beta2: float, wd: float, sgd: bool) -> Callable[..., torch.optim.Optimizer]:
    return lambda ps: RAdamReference(
        ps, lr=LR, betas=(0.9, beta2), weight_decay=wd, degenerated_to_sgd=sgd
    )


@pytest.mark.parametrize(
    ("beta2", "wd", "decoupled"),
    [(0.9, 0.1, True), (0.99, 0.1, True), (0.999, 0.1, True), (0.99, 0.0, True), (0.9, 0.0, False)],
)
def test_degenerated_to_sgd_equals_torch_radam(beta2: float, wd: float, decoupled: bool) -> None:
    # rho_t is never exactly 5 for these β2, so both rectify from step 6 on.
    assert differing_steps(beta2) == []
    assert next(t for t in range(1, 10) if rho(t, beta2) > 5) == 6
    problem = Quadratic(seed=2)
    ours = run_torch(radam_reference(beta2, wd, sgd=True), problem)
    theirs = run_torch(torch_radam(beta2, wd, decoupled), problem)
    assert max_diff(ours, theirs) <= 1e-10


def test_thresholds_split_only_where_rho_is_exactly_5() -> None:
    beta2 = RHO_EXACTLY_5_AT_STEP_6
    assert rho(6, beta2) == 5.0
    assert differing_steps(beta2) == [6]
    assert radam_step_size(6, 0.9, beta2)[0]  # the repo rectifies at rho == 5; torch does not
    problem = Quadratic(seed=3)
    ours = run_torch(radam_reference(beta2, 0.1, sgd=True), problem, steps=6)
    theirs = run_torch(torch_radam(beta2, 0.1, decoupled=True), problem, steps=6)
    assert max_diff(ours[:5], theirs[:5]) <= 1e-12
    assert max_diff(ours[5], theirs[5]) > 1e-3


@pytest.mark.parametrize("beta2", BETA2S)
def test_skipping_variant_leaves_params_alone_until_rectified(beta2: float) -> None:
    problem = Quadratic(seed=4)
    start = torch.cat([x.flatten() for x in problem.start])
    ours = run_torch(radam_reference(beta2, 0.1, sgd=False), problem, steps=20)
    theirs = run_torch(torch_radam(beta2, 0.1, decoupled=True), problem, steps=20)
    assert all(torch.equal(row, start) for row in ours[:5])  # steps 1-5: no update, no decay
    assert all((row - start).abs().min() > 0 for row in theirs[:5])
    assert (ours[5] - start).abs().min() > 0  # step 6 is rectified
    assert max_diff(ours, theirs) > 1e-3


def test_skipped_steps_still_advance_moments_and_step() -> None:
    param = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    optimizer = RAdamReference([param], lr=0.1, weight_decay=0.5)
    param.grad = torch.full_like(param, 2.0)
    optimizer.step()
    state = optimizer.state[param]
    assert state["step"] == 1
    assert state["exp_avg"].tolist() == pytest.approx([0.2, 0.2])
    assert state["exp_avg_sq"].tolist() == pytest.approx([0.004, 0.004])
    assert param.tolist() == [1.0, 1.0]


def test_a_parameter_without_gradient_does_not_advance() -> None:
    a, b = (torch.nn.Parameter(torch.ones(2)) for _ in range(2))
    optimizer = RAdamReference([a, b], degenerated_to_sgd=True)
    a.grad = torch.ones(2)
    optimizer.step()
    assert optimizer.state[a]["step"] == 1 and b not in optimizer.state


# --- AdamWarmupReference ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beta2", "warmup", "wd", "eps"),
    [
        (0.9, 0, 0.0, 1e-8),
        (0.99, 0, 0.1, 1e-8),
        (0.999, 1, 0.1, 1e-8),
        (0.9, 30, 0.1, 1e-3),
        (0.99, 30, 0.1, 1e-8),
        (0.999, 30, 0.0, 1e-3),
    ],
)
def test_adam_warmup_reference_matches_formula(
    beta2: float, warmup: int, wd: float, eps: float
) -> None:
    problem = Quadratic(seed=5)
    got = run_torch(
        lambda ps: AdamWarmupReference(
            ps, lr=LR, betas=(0.9, beta2), eps=eps, weight_decay=wd, warmup=warmup
        ),
        problem,
    )
    expected = run_formula(adam_warmup_formula(beta2, eps, wd, warmup), problem)
    assert max_diff(got, expected) <= 1e-10


@pytest.mark.parametrize(("warmup", "wd"), [(0, 0.1), (30, 0.0), (30, 0.1)])
def test_adam_warmup_reference_is_adamw_under_the_same_schedule(warmup: int, wd: float) -> None:
    """With eps = 0 the eps placement no longer matters: AdamW at lr ``scheduled_lr``."""

    def factor(i: int) -> float:  # LambdaLR's i = steps taken, so the next step is t = i + 1
        t = i + 1
        return (1e-8 + t * LR / warmup) / LR if t < warmup else 1.0

    problem = Quadratic(seed=6)
    ours = run_torch(
        lambda ps: AdamWarmupReference(ps, lr=LR, eps=0.0, weight_decay=wd, warmup=warmup),
        problem,
    )
    adamw = run_torch(
        lambda ps: torch.optim.AdamW(ps, lr=LR, eps=0.0, weight_decay=wd),
        problem,
        schedule=factor,
    )
    assert max_diff(ours, adamw) <= 1e-10
    if warmup:
        plain = run_torch(
            lambda ps: torch.optim.AdamW(ps, lr=LR, eps=0.0, weight_decay=wd), problem
        )
        assert max_diff(ours, plain) > 1e-3


@pytest.mark.parametrize("warmup", [-1, 2.5, True])
def test_adam_warmup_rejects_a_bad_warmup(warmup: object) -> None:
    with pytest.raises(ValueError, match="warmup"):
        AdamWarmupReference([torch.nn.Parameter(torch.zeros(1))], warmup=warmup)  # type: ignore[arg-type]
