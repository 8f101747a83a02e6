"""The warmup-sensitivity analysis of a study: ``analyse(...) -> api_schemas.analysis.Analysis``.

The pipeline, one module each::

    cells       Optuna trials -> outcome arrays loss[arm, lr, warmup, seed], failures counted
    bounds      gaps between best cells with simultaneous t intervals; paired failure rates
    estimands   per workload: Δ per arm, per-lr warmup effects, placebo; per (RAdam, Adam)
                pair Γ, Ma & Yarats, failure differences (numpy, batched for simulations)
    stable      lr50 per (arm, warmup) and its gain G with warmup, paired seed bootstrap
    rates       Wilson intervals for failure rates
    summary     one arm and one pair in numbers (ArmAnalysis, PairAnalysis)
    verdict     REMOVES / NO_WARMUP_BUT_WORSE / NEEDS / INCONCLUSIVE / INVALID
    findings    Liu et al., Ma & Yarats, Xiong et al.: reproduced, contradicted or undecided
    statement   the answer in one paragraph
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from optuna.trial import FrozenTrial

from api_schemas import StudySpec
from api_schemas.analysis import Analysis, Verdict, WorkloadAnalysis
from service.analysis import cells, verdict
from service.analysis.estimands import estimate
from service.analysis.findings import findings
from service.analysis.stable import stable_ranges
from service.analysis.statement import statement
from service.analysis.summary import arm_analysis, curve_trials, pair_analysis
from service.store import TrialTable

__all__ = ["Curves", "analyse", "analyse_table"]

Role = Literal["subject", "negative", "contrast"]

FREE_SEARCH = (
    "the verdict needs a balanced grid (sampler: {{type: grid}}, lr and warmup as categorical "
    "values with 0 among the warmups). {sampler} search puts trials where it expects good "
    "results, so the arms are not measured on the same cells and seeds, failures are "
    "under-sampled, and best-over-lr comparisons between arms are biased"
)


Curves = Callable[[list[int]], Mapping[int, Mapping[int, float]]]
"""Reads the learning curves (value by step) of the trials with these storage ids."""


def analyse(study_id: int, name: str, spec: StudySpec, trials: Sequence[FrozenTrial]) -> Analysis:
    """Analyse Optuna's ``trials`` of the study ``spec`` (their curves included)."""
    # Each trial named by its position: trials built in memory (``optuna.trial.create_trial``)
    # have no storage id.
    table = dataclasses.replace(TrialTable.of(trials), trial_ids=list(range(len(trials))))
    return analyse_table(
        study_id, name, spec, table, lambda rows: {i: trials[i].intermediate_values for i in rows}
    )


def analyse_table(
    study_id: int, name: str, spec: StudySpec, table: TrialTable, curves: Curves
) -> Analysis:
    """Analyse the study's trials as ``Store.trial_table`` reads them; ``curves`` reads the
    few learning curves the analysis shows (``Store.curves``). Deterministic: the bootstrap
    is seeded."""
    start = time.perf_counter()
    analysis = analyse_outcomes(study_id, name, spec, cells.build(spec, table), curves)
    analysis.seconds = time.perf_counter() - start
    return analysis


def analyse_outcomes(
    study_id: int,
    name: str,
    spec: StudySpec,
    outcomes: list[cells.Outcomes],
    curves: Curves | None = None,
) -> Analysis:
    """The analysis of outcome arrays (one per workload of ``spec``, subject first); the
    curves it shows come from ``curves`` (none without it)."""
    seeds = len(spec.seeds)
    grid = spec.sampler.type == "grid"
    roles: list[Role] = ["subject", *(c.role for c in spec.controls)]
    estimated = [
        (
            o,
            estimate(o) if grid else None,
            stable_ranges(o, spec.analysis.bootstrap) if grid else None,
        )
        for o in outcomes
    ]
    # The curves shown, every workload's, in one read.
    wanted = [i for o in outcomes for a in range(len(o.arms)) for i in curve_trials(o, a)]
    shown = curves(wanted) if curves is not None and wanted else {}
    measured = []
    for (workload_outcomes, estimates, ranges), role in zip(estimated, roles, strict=True):
        workload = WorkloadAnalysis(
            label=workload_outcomes.label,
            role=role,
            workload=workload_outcomes.workload.name,
            chance_loss=workload_outcomes.chance,
            counts=workload_outcomes.counts,
            arms=[
                arm_analysis(workload_outcomes, a, estimates, ranges, shown)
                for a in range(len(workload_outcomes.arms))
            ],
            pairs=[]
            if estimates is None
            else [
                pair_analysis(workload_outcomes, estimates, p, spec.analysis.margin)
                for p in estimates.pairs
            ],
        )
        measured.append(verdict.Measured(workload_outcomes, estimates, workload))

    decided = (
        verdict.decide(spec, measured, seeds)
        if grid
        else FREE_SEARCH.format(sampler=spec.sampler.type.upper())
    )
    the_verdict = decided if isinstance(decided, Verdict) else None
    unavailable = decided if isinstance(decided, str) else None
    workloads = [m.analysis for m in measured]
    comparisons = [c for w in workloads for p in w.pairs for c in p.ma_yarats]
    found = findings(the_verdict, workloads, comparisons)
    counts = [w.counts for w in workloads]
    assert spec.n_trials is not None
    return Analysis(
        study_id=study_id,
        study_name=name,
        design="grid" if grid else "free",
        complete=all(c.pending == 0 for c in counts)
        and sum(c.trials for c in counts) >= spec.n_trials,
        seeds=spec.seeds,
        bootstrap=spec.analysis.bootstrap,
        workloads=workloads,
        verdict=the_verdict,
        verdict_unavailable=unavailable,
        ma_yarats=comparisons,
        findings=found,
        statement=statement(the_verdict, unavailable, workloads, comparisons, found),
    )
