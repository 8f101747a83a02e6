"""The report: one self-contained HTML page (figures inlined as PNG), verdict at the top."""

from __future__ import annotations

import base64
from html import escape
from string import Template

from api_schemas.analysis import (
    Analysis,
    ArmAnalysis,
    Bounded,
    Interval,
    PairAnalysis,
    Rate,
    WorkloadAnalysis,
)
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
.REMOVES { background: #e3f4e1; } .NEEDS, .NO_WARMUP_BUT_WORSE { background: #fde8d7; }
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
$findings
$figures
<h2>Arms</h2>
$tables
$comparisons
<h2>What was counted</h2>
$counts
<p class="note">Study $study_id ($design design, seeds $seeds, 95 % intervals: simultaneous
Student t intervals for losses, Newcombe's for failure rates, $bootstrap paired bootstrap
resamples for lr50 and G). Losses are final held-out losses clipped at the chance loss; failed
runs are counted at the chance loss, never dropped. Analysis took $seconds s.</p>
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


def _bounded(value: Bounded | None, digits: str = ".3g") -> str:
    return "-" if value is None else value.describe(digits)


def _cells(values: list[str]) -> str:
    return "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in values) + "</tr>"


def _head(values: tuple[str, ...]) -> str:
    return "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in values) + "</tr>"


def _row(arm: ArmAnalysis) -> str:
    gain = _bounded(arm.stable_gain, ".2f")
    return _cells(
        [
            arm.arm,
            f"{_num(arm.best_loss_w0)} @ lr {_num(arm.best_lr_w0, 4)}",
            f"{_num(arm.best_loss)} @ lr {_num(arm.best_lr, 4)}, w={arm.best_warmup or '-'}",
            _iv(arm.regret),
            _iv(arm.placebo_regret),
            _rate(arm.failure_rate_w0),
            _rate(arm.failure_rate_best_warmup),
            _bounded(next((r.lr50 for r in arm.stable_range if r.warmup == "0"), None)),
            f"{gain} (w={arm.stable_gain_warmup})" if arm.stable_gain else "-",
        ]
    )


HEAD = (
    "arm",
    "best loss, w=0",
    "best loss, any w",
    "warmup regret Δ [95 %]",
    "placebo Δ (1 step)",
    "failures, w=0",
    "failures, best w",
    "lr50, w=0",
    "G = log2 lr50 gain",
)
LR_HEAD = ("lr", "warmup effect [95 %]", "lr50 per warmup")


def _per_lr(workload: WorkloadAnalysis) -> str:
    rows = []
    for arm in workload.arms:
        stable = "; ".join(f"w={r.warmup}: {_bounded(r.lr50)}" for r in arm.stable_range)
        for i, effect in enumerate(arm.warmup_effect):
            rows.append(
                _cells([f"{arm.arm} · {effect.lr:g}", _iv(effect.effect), stable if i == 0 else ""])
            )
    return f"<table>{_head(LR_HEAD)}{''.join(rows)}</table>" if rows else ""


def _table(workload: WorkloadAnalysis) -> str:
    rows = "\n".join(_row(arm) for arm in workload.arms)
    title = f"{workload.label} ({workload.role}, {workload.workload})"
    return f"<h3>{escape(title)}</h3>\n<table>{_head(HEAD)}\n{rows}</table>\n{_per_lr(workload)}"


PAIR_HEAD = (
    "workload",
    "RAdam vs Adam",
    "Δ_RAdam",
    "Δ_Adam",
    "Γ: RAdam w=0 - tuned Adam",
    "failure difference at best",
)


def _pair(workload: WorkloadAnalysis, pair: PairAnalysis) -> str:
    failure = pair.failure_at_best
    return _cells(
        [
            workload.label,
            f"{pair.radam_arm} vs {pair.adam_arm}",
            _iv(pair.radam_regret),
            _iv(pair.adam_regret),
            _iv(pair.gap),
            "-" if failure is None else _iv(failure.difference),
        ]
    )


def _failures(workload: WorkloadAnalysis, pair: PairAnalysis) -> str:
    return "".join(
        _cells(
            [
                f"{workload.label} · {pair.radam_arm} - {pair.adam_arm}",
                f"{f.lr:g}",
                f"{f.radam_rate:.0%} - {f.adam_rate:.0%} (w={f.adam_warmup})",
                _iv(f.difference),
            ]
        )
        for f in pair.failures_by_lr
    )


def _comparisons(analysis: Analysis) -> str:
    parts = []
    pairs = [(w, p) for w in analysis.workloads for p in w.pairs]
    if pairs:
        rows = "".join(_pair(w, p) for w, p in pairs)
        parts.append(f"<h2>RAdam against tuned Adam</h2><table>{_head(PAIR_HEAD)}{rows}</table>")
        rows = "".join(_failures(w, p) for w, p in pairs)
        head = _head(("pair", "lr", "failure rates", "difference [95 %]"))
        parts.append(f"<h3>Failure rates per lr, paired seeds</h3><table>{head}{rows}</table>")
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
            f"<td>{'-' if c.margin is None else f'±{c.margin:.3g}'}</td>"
            f"<td>{c.outcome.value if c.outcome else '-'}</td>"
            f"<td>{escape('; '.join(f'{d.lr:g}: {_iv(d.difference)}' for d in c.by_lr))}</td>"
            "</tr>"
            for c in analysis.ma_yarats
        )
        parts.append(
            "<h2>Ma &amp; Yarats: RAdam against an untuned warmup</h2><table><tr><th>workload"
            "</th><th>difference</th><th>best over lr [95 %]</th><th>δ</th><th></th>"
            f"<th>per lr</th></tr>{rows}</table>"
        )
    return "\n".join(parts)


def _findings(analysis: Analysis) -> str:
    if not analysis.findings:
        return ""
    rows = "".join(_cells([f.paper, f.claim, f.result, f.evidence]) for f in analysis.findings)
    head = _head(("paper", "claim", "this study", "evidence"))
    return f'<h2>Published findings</h2><table id="findings">{head}{rows}</table>'


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
        findings=_findings(analysis),
        figures=_figures(analysis),
        tables="\n".join(_table(w) for w in analysis.workloads),
        comparisons=_comparisons(analysis),
        counts=_counts(analysis),
        design=analysis.design,
        seeds=", ".join(map(str, analysis.seeds)),
        bootstrap=analysis.bootstrap,
        seconds=f"{analysis.seconds:.2f}",
    )
