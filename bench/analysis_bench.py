"""How long the analysis takes at 100, 1,000 and 10,000 trials.

Synthetic finished trials (per-seed results and learning curves, with some diverged, pruned
and failed) are written into a real Optuna SQLite storage, as the service would hold them; the
timed part is what ``GET /v1/studies/{id}/analysis`` does: read the trials from the storage (by
the storage seam's set-based SQL, ``Store.trials``; Optuna's ORM read is timed beside it) and
analyse them. The report's figures are timed too.

    python bench/analysis_bench.py [--sizes 100 1000 10000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from api_schemas import StudySpec
from api_schemas.search_space import values_of
from service import trials as tv
from service.analysis import analyse
from service.report import html
from service.store import Store

OPTIMIZERS = ["adam", "radam", "adamw", "radam_reference"]
BETA2 = [0.95, 0.98, 0.99, 0.999]
WARMUPS = [0, 25, 50, 100, 200]
CHANCE = math.log(32)


def spec_for(trials: int, seeds: int) -> StudySpec:
    """A grid spec of about ``trials`` cells: 16 arms x 5 warmups x (trials / 80) lrs."""
    lrs = [float(x) for x in np.geomspace(1e-4, 1e-1, max(1, round(trials / 80)))]
    return StudySpec.model_validate(
        {
            "name": f"bench-{trials}",
            "workload": {"name": "postln_transformer"},
            "sampler": {"type": "grid"},
            "seeds_per_trial": seeds,
            "search_space": {
                "optimizer": {"type": "categorical", "choices": OPTIMIZERS},
                "beta2": {"type": "categorical", "choices": BETA2},
                "lr": {"type": "categorical", "choices": lrs},
                "warmup_steps": {"type": "categorical", "choices": WARMUPS},
            },
        }
    )


def synthetic(spec: StudySpec, rng: np.random.Generator) -> list[optuna.trial.FrozenTrial]:
    """One finished trial per grid cell, with plausible losses, failures and curves."""
    # As the service suggests them: each parameter over every value the search space lists.
    distributions = {
        name: CategoricalDistribution(values_of(param) or [])
        for name, param in spec.search_space.items()
    }
    out = []
    for cell in spec.grid():
        lr, warmup = float(cell["lr"]), int(cell["warmup_steps"])
        mean = 0.5 + 0.2 * abs(math.log10(lr) + 2.5) - 0.05 * (warmup > 0)
        fail_p = min(1.0, max(0.0, (math.log10(lr) + 2.2) * (0.3 if warmup else 0.8)))
        states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
        state = states[int(rng.choice(3, p=[0.96, 0.02, 0.02]))]
        seeds: list[dict[str, Any]] = []
        if state == TrialState.COMPLETE:
            for seed in spec.seeds:
                diverged = bool(rng.random() < fail_p)
                loss = CHANCE if diverged else float(mean + rng.normal(0, 0.05))
                seeds.append({"seed": seed, "loss": loss, "diverged": diverged, "steps": 300})
        attrs: dict[str, Any] = {tv.ATTR_SEEDS: seeds}
        if state == TrialState.FAIL:
            attrs[tv.ATTR_FAILURE] = {"kind": "error", "message": "synthetic"}
        out.append(
            optuna.trial.create_trial(
                state=state,
                params=cell,
                distributions={k: distributions[k] for k in cell},
                value=float(np.mean([s["loss"] for s in seeds])) if seeds else None,
                user_attrs=attrs,
                intermediate_values={s: mean + 2 / s for s in range(25, 301, 25)},
            )
        )
    return out


def bench(trials: int, seeds: int, folder: Path) -> tuple[int, float, float, float, float]:
    spec = spec_for(trials, seeds)
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / f'bench-{trials}.db'}")
    study = optuna.create_study(storage=storage, study_name=spec.name)
    study.add_trials(synthetic(spec, np.random.default_rng(0)))
    start = time.perf_counter()
    orm = optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False)
    read_orm = time.perf_counter() - start
    # What the service reads with (GET .../analysis): the storage seam's set-based SQL.
    store = Store(f"sqlite:///{folder / f'bench-{trials}.db'}")
    try:
        start = time.perf_counter()
        frozen = store.trials(Store.study_id_of(study))
        read = time.perf_counter() - start
    finally:
        store.close()
    assert len(frozen) == len(orm)
    start -= read
    analysis = analyse(1, spec.name, spec, frozen)
    analysed = time.perf_counter() - start
    html(analysis)
    reported = time.perf_counter() - start
    return len(frozen), read_orm, read, analysed, reported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"{'trials':>7} {'ORM read s':>10} {'SQL read s':>10} {'read+analysis s':>16}"
        f" {'+report s':>10} {'per 1k':>8}"
    )
    with tempfile.TemporaryDirectory() as folder:
        # Import what the first analysis and report load lazily (Optuna's importance module,
        # matplotlib): a service pays that once, not per study.
        warm_up = spec_for(480, 2)
        html(analyse(0, "warm-up", warm_up, synthetic(warm_up, np.random.default_rng(1))))
        base = None
        for size in args.sizes:
            n, read_orm, read, analysed, reported = bench(size, args.seeds, Path(folder))
            base = base or analysed / n
            print(
                f"{n:>7} {read_orm:>10.2f} {read:>10.2f} {analysed:>16.2f} {reported:>10.2f} "
                f"{analysed / n * 1000:>8.2f}  (x{analysed / n / base:.2f} per trial vs smallest)"
            )


if __name__ == "__main__":
    main()
