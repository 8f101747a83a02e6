"""``hps report STUDY``: the study's verdict, regrets, Γ, stable lr ranges, per-lr effects and
failure differences; the report page and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from api_schemas.analysis import Analysis, Bounded, Interval, WorkloadAnalysis
from hps.cli.common import DEFAULT_URL, TokenOption, UrlOption, connect, console, fail, out

FORMATS: tuple[Literal["png", "svg"], ...] = ("png", "svg")


def _iv(interval: Interval | None) -> str:
    if interval is None:
        return "-"
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(workload: WorkloadAnalysis) -> Table:
    table = Table(title=f"{workload.label} ({workload.role})", title_justify="left")
    for column in ("arm", "best w=0", "best", "at lr, w", "regret Δ [95 %]", "fails w=0"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in workload.arms:
        rate = arm.failure_rate_w0
        table.add_row(
            arm.arm,
            _num(arm.best_loss_w0),
            _num(arm.best_loss),
            "-" if arm.best_lr is None else f"{arm.best_lr:.3g}, {arm.best_warmup}",
            _iv(arm.regret),
            "-" if rate.rate is None else f"{rate.failures}/{rate.runs}",
        )
    return table


def _bounded(value: Bounded | None) -> str:
    return "-" if value is None else value.describe()


def _stable(workload: WorkloadAnalysis) -> Table:
    table = Table(title=f"{workload.label}: stable lr range", title_justify="left")
    for column in ("arm", "lr50 at w=0", "G = log2 gain", "with warmup"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in workload.arms:
        w0 = next((r.lr50 for r in arm.stable_range if r.warmup == "0"), None)
        table.add_row(
            arm.arm, _bounded(w0), _bounded(arm.stable_gain), arm.stable_gain_warmup or "-"
        )
    return table


def _pairs(workload: WorkloadAnalysis) -> Table:
    table = Table(title=f"{workload.label}: RAdam against tuned Adam", title_justify="left")
    for column in ("pair", "Γ [95 %]", "failures at best", "per lr: warmup effect / failures"):
        table.add_column(column, justify="left" if column == "pair" else "right")
    arms = {a.arm: a for a in workload.arms}
    for pair in workload.pairs:
        failure = pair.failure_at_best
        radam = arms[pair.radam_arm]
        per_lr = "; ".join(
            f"{e.lr:g}: {_iv(e.effect)} / {f.difference.estimate:+.0%}"
            for e, f in zip(radam.warmup_effect, pair.failures_by_lr, strict=False)
        )
        table.add_row(
            f"{pair.radam_arm} vs {pair.adam_arm}",
            _iv(pair.gap),
            "-" if failure is None else _iv(failure.difference),
            per_lr,
        )
    return table


def _print(analysis: Analysis) -> None:
    verdict = analysis.verdict
    headline = verdict.outcome.value if verdict else "NO VERDICT"
    out.print(f"[bold]study {analysis.study_id} · {analysis.study_name}: {headline}[/bold]")
    if not analysis.complete:
        out.print("(the study is still running: this analysis counts the trials done so far)")
    for workload in analysis.workloads:
        out.print(_table(workload))
        if workload.pairs:
            out.print(_pairs(workload))
        out.print(_stable(workload))
    out.print(analysis.statement, markup=False)


def _write_figures(analysis: Analysis, folder: Path) -> list[Path]:
    from service.report import FIGURES, render  # matplotlib: only when figures are asked for

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (_, draw) in FIGURES.items():
        figure = draw(analysis)
        for fmt in FORMATS:
            path = folder / f"{name}.{fmt}"
            path.write_bytes(render(figure, fmt))
            written.append(path)
    return written


def report(
    study: Annotated[int, typer.Argument(help="Study id.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole analysis as JSON on stdout.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Save the report page (HTML) to this file.")
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option("--figures", help="Write each figure as PNG and SVG into this folder."),
    ] = None,
) -> None:
    """A study's warmup-sensitivity analysis: the verdict (REMOVES / NO_WARMUP_BUT_WORSE /
    NEEDS / INCONCLUSIVE / INVALID), each arm's warmup regret, RAdam's gap to tuned Adam (Γ),
    the stable lr range (lr50, G), per-lr warmup effects and failure differences, each with
    its 95 % interval, and the published findings it reproduces or contradicts."""
    with connect(url, token) as client:
        analysis = client.analysis(study)
        page = client.report_html(study) if html is not None else None
    if as_json:
        typer.echo(analysis.model_dump_json(indent=2))
    else:
        _print(analysis)
    try:
        if html is not None and page is not None:
            html.write_text(page, encoding="utf-8")
            console.print(f"wrote {html}")
        if figures is not None:
            written = _write_figures(analysis, figures)
            console.print(f"wrote {len(written)} figures to {figures}")
    except OSError as error:
        raise fail(f"cannot write {error.filename}: {error.strerror}") from None
