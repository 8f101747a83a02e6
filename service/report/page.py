"""The report: one self-contained HTML page (figures inlined as PNG), verdict at the top."""

from __future__ import annotations

import base64
from html import escape
from string import Template

from api_schemas.analysis import Analysis, ArmAnalysis, Interval, Rate, WorkloadAnalysis
from service.report.figures import FIGURES, render

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hps · study $study_id · $name</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
header { padding: 1rem 1.5rem; border-radius: 8px; margin-bottom: 1.5rem; }
header h1 { margin: 0 0 .5rem 0; }
.REMOVES { background: #e3f4e1; } .NEEDS { background: #fde8d7; }
.INCONCLUSIVE, .none { background: #eef0f3; } .INVALID { background: #f8d9dc; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; }
figcaption { color: #555; font-size: .9rem; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem 0; font-size: .85rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; font-size: .85rem; }
</style>
</head>
<body>
<header class="$outcome_class">
<h1>$headline</h1>
<p>$statement</p>
</header>
$figures
<h2>Arms</h2>
$tables
$comparisons
<h2>What was counted</h2>
$counts
<p class="note">Study $study_id ($design design, seeds $seeds, $bootstrap bootstrap resamples,
95 % intervals). Losses are final held-out losses clipped at the chance loss; failed runs are
counted at the chance loss, never dropped. Analysis took $seconds s.</p>
</body>
</html>
""")


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _iv(interval: Interval | None) -> str:
    if interval is None:
        return "-"
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _rate(rate: Rate) -> str:
    if rate.rate is None:
        return "-"
    return f"{rate.failures}/{rate.runs} ({rate.rate:.0%}; {rate.low:.0%} to {rate.high:.0%})"


def _row(arm: ArmAnalysis) -> str:
    cells = [
        arm.arm,
        f"{_num(arm.best_loss_w0)} @ lr {_num(arm.best_lr_w0, 4)}",
        f"{_num(arm.best_loss)} @ lr {_num(arm.best_lr, 4)}, w={arm.best_warmup or '-'}",
        _iv(arm.regret),
        _num(arm.naive_regret),
        _rate(arm.failure_rate_w0),
        _rate(arm.failure_rate_best_warmup),
        _num(arm.warmup_sensitivity),
        _num(arm.lr_sensitivity_w0),
        _num(arm.warmup_importance, 2),
    ]
    return "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


HEAD = (
    "arm",
    "best loss, w=0",
    "best loss, any w",
    "warmup regret Δ [95 %]",
    "naive Δ",
    "failures, w=0",
    "failures, best w",
    "warmup sensitivity",
    "lr sensitivity, w=0",
    "warmup importance",
)


def _table(workload: WorkloadAnalysis) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEAD)
    rows = "\n".join(_row(arm) for arm in workload.arms)
    title = f"{workload.label} ({workload.role}, {workload.workload})"
    return f"<h3>{escape(title)}</h3>\n<table><tr>{head}</tr>\n{rows}</table>"


def _comparisons(analysis: Analysis) -> str:
    parts = []
    if analysis.verdict is not None:
        rows = "".join(
            f"<tr><td>{escape(c.label)}</td><td>{c.role}</td><td>{escape(c.requirement)}</td>"
            f"<td>{_iv(c.adam_regret)}</td><td>{'passed' if c.passed else 'FAILED'}</td></tr>"
            for c in analysis.verdict.controls
        )
        parts.append(
            "<h2>Controls</h2><table><tr><th>workload</th><th>role</th><th>requirement</th>"
            f"<th>Adam's Δ [95 %]</th><th></th></tr>{rows}</table>"
        )
    if analysis.ma_yarats:
        rows = "".join(
            f"<tr><td>{escape(c.workload)}</td><td>{escape(c.radam_arm)} at w=0 &minus; "
            f"{escape(c.adam_arm)} with {c.schedule}</td><td>{_iv(c.difference)}</td>"
            f"<td>±{c.margin:.3g}</td><td>{c.outcome.value}</td></tr>"
            for c in analysis.ma_yarats
        )
        parts.append(
            "<h2>Ma &amp; Yarats: RAdam against an untuned warmup</h2><table><tr><th>workload"
            "</th><th>difference</th><th>estimate [95 %]</th><th>δ</th><th></th></tr>"
            f"{rows}</table>"
        )
    return "\n".join(parts)


def _counts(analysis: Analysis) -> str:
    head = (
        "<tr><th>workload</th><th>trials counted</th><th>completed</th><th>pruned</th>"
        "<th>failed</th><th>superseded</th><th>pending</th><th>failed seed runs</th></tr>"
    )
    rows = []
    for w in analysis.workloads:
        c = w.counts
        failed = ", ".join(f"{k} {v}" for k, v in sorted(c.failed.items())) or "0"
        values = [
            w.label,
            c.trials,
            c.completed,
            c.pruned,
            failed,
            c.superseded,
            c.pending,
            f"{c.failed_seed_runs}/{c.seed_runs}",
        ]
        rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in values) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _figures(analysis: Analysis) -> str:
    parts = []
    for name, (caption, draw) in FIGURES.items():
        png = base64.b64encode(render(draw(analysis))).decode("ascii")
        parts.append(
            f'<figure id="{name}"><img src="data:image/png;base64,{png}" '
            f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
        )
    return "\n".join(parts)


def html(analysis: Analysis) -> str:
    """The whole report as one HTML document with nothing to fetch."""
    verdict = analysis.verdict
    if verdict is not None:
        headline = f"{verdict.outcome.value}: {verdict.radam_arm} vs {verdict.adam_arm}"
    else:
        headline = "No verdict"
    return PAGE.substitute(
        study_id=analysis.study_id,
        name=escape(analysis.study_name),
        outcome_class=verdict.outcome.value if verdict else "none",
        headline=escape(headline),
        statement=escape(analysis.statement),
        figures=_figures(analysis),
        tables="\n".join(_table(w) for w in analysis.workloads),
        comparisons=_comparisons(analysis),
        counts=_counts(analysis),
        design=analysis.design,
        seeds=", ".join(map(str, analysis.seeds)),
        bootstrap=analysis.bootstrap,
        seconds=f"{analysis.seconds:.2f}",
    )
