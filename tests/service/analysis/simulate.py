"""Simulated studies with known answers: outcome arrays drawn from planted cell means.

A seed's loss is ``truth[arm, lr, w] + seed effect + noise``; with probability ``fail`` it is a
failure at the chance loss instead (``fail`` may be an array of the truth's shape: a cell that
fails now and then). The seed effect is shared by every cell (paired seeds). ``draw`` makes
many studies at once, with a leading study axis, for the vectorised calibration tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from api_schemas import StudySpec
from api_schemas.analysis import Analysis, OutcomeCounts
from service.analysis import analyse_outcomes
from service.analysis.cells import Arm, Floats, Outcomes

CHANCE = float(np.log(32))
LRS = [1e-3, 3e-3, 1e-2, 3e-2]
WARMUPS = [0, 50, 100]


def spec(seeds: int, **overrides: Any) -> StudySpec:
    """A grid over adam and radam, LRS x WARMUPS, on the Post-LN workload."""
    body: dict[str, Any] = {
        "name": "simulated",
        "workload": {"name": "postln_transformer"},
        "sampler": {"type": "grid"},
        "seeds_per_trial": seeds,
        "search_space": {
            "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
            "lr": {"type": "categorical", "choices": LRS},
            "warmup_steps": {"type": "categorical", "choices": WARMUPS},
        },
    }
    body.update(overrides)
    return StudySpec.model_validate(body)


def truth(regret_adam: float, regret_radam: float) -> Floats:
    """Cell means (arm, lr, warmup) with the planted warmup regrets.

    Both arms reach 0.5 at lr 1e-2 with warmup; without warmup they reach 0.5 + regret at their
    best lr. The highest lr fails (chance) whatever the warmup: the grid extends past where every
    arm fails, as SCIENCE.md asks.
    """
    base = np.array([[0.9, 0.8, 0.75], [0.7, 0.6, 0.55], [0.8, 0.5, 0.52], [CHANCE] * 3])
    arms = np.stack([base, base])
    for arm, regret in enumerate((regret_adam, regret_radam)):
        arms[arm, :3, 0] = 0.5 + regret + np.array([0.3, 0.0, 0.1])
    return arms


def draw(
    rng: np.random.Generator,
    means: Floats,
    seeds: int,
    studies: int,
    *,
    noise: float = 0.08,
    seed_sd: float = 0.05,
    fail: float | Floats = 0.0,
) -> tuple[Floats, npt.NDArray[np.bool_]]:
    """``studies`` simulated workloads: (loss, failed), each (studies, arm, lr, warmup, seed)."""
    shape = (studies, *means.shape, seeds)
    seed_effect = rng.normal(0, seed_sd, (studies, 1, 1, 1, seeds))
    loss = means[None, ..., None] + seed_effect + rng.normal(0, noise, shape)
    p = np.broadcast_to(np.asarray(fail, dtype=np.float64), means.shape)[None, ..., None]
    failed = (rng.random(shape) < p) | (means[None, ..., None] >= CHANCE)
    return np.where(failed, CHANCE, np.minimum(loss, CHANCE)), failed


def true_gap(x: Floats, y: Floats) -> float:
    """min of the planted means ``x`` minus min of ``y``."""
    return float(np.min(x) - np.min(y))


def outcomes(
    rng: np.random.Generator,
    means: Floats,
    seeds: int,
    *,
    noise: float = 0.08,
    seed_sd: float = 0.05,
    fail: float | Floats = 0.0,
    label: str = "postln_transformer",
) -> Outcomes:
    """One simulated workload: ``means`` (arm, lr, warmup) plus paired-seed noise."""
    a, n_lr, w = means.shape
    drawn, drawn_failed = draw(rng, means, seeds, 1, noise=noise, seed_sd=seed_sd, fail=fail)
    loss, failed = drawn[0], drawn_failed[0]
    runs = np.full((a, n_lr, w), seeds, dtype=np.int64)
    return Outcomes(
        label=label,
        workload=spec(seeds).workload,
        chance=CHANCE,
        arms=[Arm("adam", ()), Arm("radam", ())][:a],
        lrs=np.asarray(LRS),
        warmups=[str(x) for x in WARMUPS],
        loss=loss,
        failed=failed,
        runs=runs,
        failures=failed.sum(axis=-1).astype(np.int64),
        cell_trial=np.full((a, n_lr, w), -1, dtype=np.int64),
        trial_ids=np.zeros(0, dtype=np.int64),
        numbers=np.zeros(0, dtype=np.int64),
        counts=OutcomeCounts(
            trials=a * n_lr * w,
            completed=a * n_lr * w,
            pruned=0,
            superseded=0,
            pending=0,
            seed_runs=int(failed.size),
            failed_seed_runs=int(failed.sum()),
            diverged_seeds=int(failed.sum()),
        ),
    )


def true_regret(means: Floats) -> Floats:
    """Each arm's planted regret: best mean at w=0 minus best mean overall."""
    return np.asarray(means[:, :, 0].min(axis=1) - means.reshape(len(means), -1).min(axis=1))


def analysis(seed: int = 0, seeds: int = 4) -> Analysis:
    """A whole simulated analysis: Post-LN subject (Adam needs warmup, RAdam not), an MLP
    negative control (no effect), one cell not run yet."""
    rng = np.random.default_rng(seed)
    subject = outcomes(rng, truth(1.0, 0.0), seeds)
    subject.loss[1, 0, 2] = np.nan
    subject.runs[1, 0, 2] = 0
    control = outcomes(rng, truth(0.0, 0.0), seeds, label="digits_mlp")
    study = spec(
        seeds,
        controls=[{"role": "negative", "workload": {"name": "digits_mlp"}}],
        analysis={"margin": 0.2},
    )
    return analyse_outcomes(7, "simulated", study, [subject, control])
