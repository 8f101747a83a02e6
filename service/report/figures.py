"""The report's figures, drawn from an ``Analysis`` alone (so the CLI can draw them too).

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot: no global
state, so request threads can draw at the same time, and no display is needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from api_schemas.analysis import Analysis, ArmAnalysis, Interval, WorkloadAnalysis

Format = Literal["png", "svg"]
PANEL = (4.2, 3.2)
"""Inches per panel."""
MAX_ANNOTATED_CELLS = 80
"""Failure maps write "failed/runs" into each cell up to this many cells."""
MAX_TICKS = 12


def _title(workload: WorkloadAnalysis) -> str:
    role = {"subject": "subject", "negative": "negative control", "contrast": "contrast"}
    return f"{workload.label} ({role[workload.role]})"


def _panels(rows: int, cols: int, title: str) -> tuple[Figure, list[list[Axes]]]:
    figure = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    figure.suptitle(title, fontsize=13)
    return figure, [list(row) for row in axes]


def _best_over_lr(arm: ArmAnalysis) -> list[float]:
    """Per warmup, the best mean loss over lr (NaN where no cell ran)."""
    columns = zip(*arm.cells.mean_loss, strict=True) if arm.cells.mean_loss else []
    return [min((v for v in col if v is not None), default=math.nan) for col in columns]


def _chance(ax: Axes, workload: WorkloadAnalysis) -> None:
    ax.axhline(workload.chance_loss, color="grey", linestyle=":", linewidth=1)
    ax.annotate(
        "chance",
        (1.0, workload.chance_loss),
        xycoords=("axes fraction", "data"),
        ha="right",
        va="bottom",
        fontsize=8,
        color="grey",
    )


MAX_INNER_LEGEND = 10
"""Beyond this many entries the legend shrinks to two columns of small type."""


def _legend(ax: Axes) -> None:
    handles = ax.get_legend_handles_labels()[0]
    if len(handles) > MAX_INNER_LEGEND:  # many arms: at full size it squeezes the plot away
        ax.legend(fontsize=4, ncol=2)
    elif handles:  # a study with no results yet has no lines
        ax.legend(fontsize=7)


def _regret_label(arm: ArmAnalysis) -> str:
    if arm.regret is None:
        return arm.arm
    r = arm.regret
    return f"{arm.arm}: Δ={r.estimate:.2f} [{r.low:.2f}, {r.high:.2f}]"


def by_warmup(analysis: Analysis) -> Figure:
    """Final held-out loss (best over lr) against warmup, one line per arm, one panel per
    workload: a line that falls to the right of w=0 is an arm that needs warmup."""
    workloads = analysis.workloads
    figure, axes = _panels(1, len(workloads), "Best loss over lr, against warmup")
    for ax, workload in zip(axes[0], workloads, strict=True):
        for arm in workload.arms:
            x = np.arange(len(arm.cells.warmups))
            ax.plot(x, _best_over_lr(arm), marker="o", label=_regret_label(arm))
            ax.set_xticks(x, [w.replace("untuned_", "untuned\n") for w in arm.cells.warmups])
        ax.margins(y=0.15)
        ax.set_ylim(bottom=0)
        ax.set_title(_title(workload), fontsize=10)
        ax.set_xlabel("warmup (steps, or schedule)")
        ax.set_ylabel("held-out loss, best over lr")
        _legend(ax)
    return figure


def loss_vs_lr(analysis: Analysis) -> Figure:
    """Loss against lr per arm: solid without warmup, dashed with the best warmup at each lr.

    Where the solid line climbs to chance and the dashed one does not, warmup rescues that lr;
    the warmup regret is the gap between the two lines' lowest points.
    """
    workloads = analysis.workloads
    outcome = analysis.verdict.outcome.value if analysis.verdict else "no verdict"
    title = f"{analysis.study_name}: {outcome}. Loss against learning rate"
    figure, axes = _panels(1, len(workloads), title)
    for ax, workload in zip(axes[0], workloads, strict=True):
        for i, arm in enumerate(workload.arms):
            colour = f"C{i % 10}"
            cells = arm.cells
            rows = [[math.nan if v is None else v for v in row] for row in cells.mean_loss]
            if "0" in cells.warmups:
                w0 = cells.warmups.index("0")
                ax.plot(
                    cells.lrs, [r[w0] for r in rows], "-o", color=colour, label=f"{arm.arm}, w=0"
                )
            tuned = [min((v for v in r if not math.isnan(v)), default=math.nan) for r in rows]
            ax.plot(cells.lrs, tuned, "--s", color=colour, label=f"{arm.arm}, best warmup per lr")
        _chance(ax, workload)
        _log_lr_axis(ax, workload)
        ax.set_title(_title(workload), fontsize=10)
        ax.set_ylabel("held-out loss, mean over seeds")
        _legend(ax)
    return figure


def _log_lr_axis(ax: Axes, workload: WorkloadAnalysis) -> None:
    lrs = sorted({lr for arm in workload.arms for lr in arm.cells.lrs})
    ax.set_xscale("log")
    if len(lrs) <= MAX_TICKS:  # a grid's own values; more are left to the log axis
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.minorticks_off()
    ax.set_xlabel("learning rate")


def failure_maps(analysis: Analysis) -> Figure:
    """Share of failed seed runs over lr x warmup, per arm (columns) and workload (rows)."""
    workloads = analysis.workloads
    cols = max(1, max(len(w.arms) for w in workloads))
    figure, axes = _panels(len(workloads), cols, "Failed runs (diverged or collapsed to chance)")
    image = None
    for row, workload in zip(axes, workloads, strict=True):
        for ax in row[len(workload.arms) :]:
            ax.set_axis_off()
        for ax, arm in zip(row, workload.arms, strict=False):
            cells = arm.cells
            failures, runs = np.asarray(cells.failures), np.asarray(cells.runs)
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(runs > 0, failures / np.maximum(runs, 1), np.nan)
            image = ax.imshow(share, cmap="Reds", vmin=0, vmax=1, aspect="auto", origin="lower")
            if runs.size <= MAX_ANNOTATED_CELLS:  # beyond that the counts are unreadable
                for (i, j), n in np.ndenumerate(runs):
                    text = f"{failures[i, j]}/{n}" if n else "-"
                    colour = "white" if n and failures[i, j] > n / 2 else "black"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
            ax.set_xticks(range(len(cells.warmups)), cells.warmups, fontsize=7)
            every = max(1, len(cells.lrs) // MAX_TICKS)
            lr_ticks = range(0, len(cells.lrs), every)
            ax.set_yticks(lr_ticks, [f"{cells.lrs[i]:.2g}" for i in lr_ticks], fontsize=7)
            ax.set_title(f"{workload.label}: {arm.arm}", fontsize=9)
            ax.set_xlabel("warmup")
            ax.set_ylabel("learning rate")
    if image is not None:
        figure.colorbar(image, ax=[ax for row in axes for ax in row], shrink=0.6, label="failed")
    return figure


def learning_curves(analysis: Analysis) -> Figure:
    """Training loss of representative trials: one curve per warmup, for each arm at the lr
    where warmup changes the final loss most (see ArmAnalysis.curves)."""
    workloads = analysis.workloads
    cols = max(1, max(len(w.arms) for w in workloads))
    figure, axes = _panels(len(workloads), cols, "Learning curves where warmup matters most")
    for row, workload in zip(axes, workloads, strict=True):
        for ax in row[len(workload.arms) :]:
            ax.set_axis_off()
        for ax, arm in zip(row, workload.arms, strict=False):
            for curve in arm.curves:
                ax.plot(curve.steps, curve.loss, label=f"w={curve.warmup}")
            _chance(ax, workload)
            lr = f" (lr {arm.curves[0].lr:.2g})" if arm.curves else ""
            ax.set_title(f"{workload.label}: {arm.arm}{lr}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss, mean over seeds")
            _legend(ax)
    return figure


def _intervals(analysis: Analysis) -> list[tuple[str, Interval]]:
    """The verdict's quantities with intervals, per workload and pair, top to bottom."""
    rows: list[tuple[str, Interval]] = []
    for workload in analysis.workloads:
        for pair in workload.pairs:
            named = [
                (f"Δ {pair.adam_arm}", pair.adam_regret),
                (f"Δ {pair.radam_arm}", pair.radam_regret),
                (f"Γ {pair.radam_arm} - tuned {pair.adam_arm}", pair.gap),
            ]
            named += [
                (f"{pair.radam_arm} - {pair.adam_arm} {c.schedule}", c.difference)
                for c in pair.ma_yarats
            ]
            rows += [(f"{workload.label}: {n}", i) for n, i in named if i is not None]
    return rows


def estimands(analysis: Analysis) -> Figure:
    """Every regret Δ, gap Γ and Ma & Yarats difference with its 95 % interval, against ±δ:
    an interval wholly left of δ shows no need (or no gap); wholly right shows one."""
    rows = _intervals(analysis)
    figure = Figure(figsize=(8.5, 0.9 + 0.32 * max(1, len(rows))), layout="constrained")
    ax = figure.subplots()
    outcome = analysis.verdict.outcome.value if analysis.verdict else "no verdict"
    figure.suptitle(f"{analysis.study_name}: {outcome}", fontsize=13)
    y = np.arange(len(rows))[::-1]
    for yi, (_, interval) in zip(y, rows, strict=True):
        ax.plot([interval.low, interval.high], [yi, yi], color="C0", linewidth=2)
        ax.plot([interval.estimate], [yi], "o", color="C0")
    ax.set_yticks(y, [name for name, _ in rows], fontsize=8)
    ax.axvline(0, color="grey", linewidth=1)
    if analysis.verdict is not None:
        for x in (analysis.verdict.margin, -analysis.verdict.margin):
            ax.axvline(x, color="C3", linestyle="--", linewidth=1)
        ax.annotate("δ", (analysis.verdict.margin, 1.0), xycoords=("data", "axes fraction"))
    ax.set_xlabel("held-out loss difference (95 % interval)")
    return figure


def warmup_effects(analysis: Analysis) -> Figure:
    """Per lr, the loss at w=0 minus the best loss over warmups at that lr, with intervals:
    where warmup helps and by how much, one line per arm."""
    workloads = analysis.workloads
    figure, axes = _panels(1, len(workloads), "Warmup effect at each learning rate")
    for ax, workload in zip(axes[0], workloads, strict=True):
        for i, arm in enumerate(workload.arms):
            points = [(e.lr, e.effect) for e in arm.warmup_effect if e.effect is not None]
            if not points:
                continue
            lrs = [lr for lr, _ in points]
            mid = np.asarray([e.estimate for _, e in points])
            err = np.asarray(
                [[e.estimate - e.low for _, e in points], [e.high - e.estimate for _, e in points]]
            )
            ax.errorbar(
                lrs, mid, yerr=err, marker="o", capsize=3, color=f"C{i % 10}", label=arm.arm
            )
        ax.axhline(0, color="grey", linewidth=1)
        if analysis.verdict is not None:
            ax.axhline(analysis.verdict.margin, color="C3", linestyle="--", linewidth=1)
        _log_lr_axis(ax, workload)
        ax.set_title(_title(workload), fontsize=10)
        ax.set_ylabel("loss(w=0) - best over w")
        _legend(ax)
    return figure


def stable_ranges(analysis: Analysis) -> Figure:
    """lr50 (half the seeds fail) per arm and warmup, with intervals: warmup that moves lr50 to
    the right widens the range of lrs that train (Xiong et al.'s measure)."""
    workloads = analysis.workloads
    figure, axes = _panels(1, len(workloads), "Stable lr range: lr50 per warmup")
    rows = max((sum(len(a.stable_range) for a in w.arms) for w in workloads), default=0)
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, max(height, 1.2 + 0.16 * rows))  # a readable line per range
    for ax, workload in zip(axes[0], workloads, strict=True):
        lrs = [lr for arm in workload.arms for lr in arm.cells.lrs] or [1.0]
        low_end, high_end = min(lrs), max(lrs)
        labels: list[str] = []
        for arm in workload.arms:
            for r in arm.stable_range:
                y = len(labels)
                labels.append(f"{arm.arm} w={r.warmup}")
                b = r.lr50
                low = low_end / 2 if b.low is None else b.low
                high = high_end * 2 if b.high is None else b.high
                ax.plot([low, high], [y, y], color="C0", linewidth=2)
                if b.estimate is not None:
                    ax.plot([b.estimate], [y], "o", color="C0")
                else:
                    edge = high_end * 2 if b.censored == "above_grid" else low_end / 2
                    ax.plot([edge], [y], ">" if b.censored == "above_grid" else "<", color="C0")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        _log_lr_axis(ax, workload)
        ax.set_title(_title(workload), fontsize=10)
    return figure


FIGURES: dict[str, tuple[str, Callable[[Analysis], Figure]]] = {
    "estimands": (
        "Warmup regrets Δ, RAdam's gap to tuned Adam Γ and the Ma & Yarats differences, with "
        "95 % intervals, against the margin δ",
        estimands,
    ),
    "lr": (
        "Loss against learning rate: without warmup (solid) and with the best warmup at each "
        "lr (dashed)",
        loss_vs_lr,
    ),
    "warmup": ("Final loss against warmup, best over lr, with each arm's regret Δ", by_warmup),
    "effects": ("Warmup effect per learning rate, with 95 % intervals", warmup_effects),
    "stable": ("Stable lr range: lr50 per arm and warmup, with 95 % intervals", stable_ranges),
    "failures": ("Failure map over learning rate and warmup", failure_maps),
    "curves": ("Learning curves of representative trials", learning_curves),
}
"""Name -> (caption, drawing function), in the report's order; the first is the headline."""


def render(figure: Figure, fmt: Format = "png", dpi: int = 100) -> bytes:
    """The figure as PNG or SVG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=dpi)
    return buffer.getvalue()
