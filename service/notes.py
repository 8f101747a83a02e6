"""The answer where a person looks first: the study's note in optuna-dashboard.

A study exists to answer one question, and the dashboard is where people open it. So when a
study finishes (and whenever asked: ``POST /v1/studies/{id}/note``) the service writes the
verdict, its statement and the per-arm table into the study's optuna-dashboard note, which the
dashboard shows at the top of the study's page. The text is the analysis's own
(``service.analysis``): nothing here judges anything.

The note is written with optuna-dashboard's public ``save_note``, by the service (the one
writer); the dashboard's own note editing stays refused (it is read-only here). The headline
figure is an image link to ``GET /v1/studies/{id}/figures/estimands.png`` on the same origin,
which the dashboard's login cookie may read: the dashboard's Markdown drops ``data:`` images,
and optuna-dashboard's artifacts would need a file store shared by every replica, while the
figure route is computed from the database, which they already share (and cached once the
study is finished: ``service.reports``).
"""

from __future__ import annotations

import asyncio
import logging
import math

from optuna_dashboard import get_note, save_note
from starlette.concurrency import run_in_threadpool

from api_schemas.analysis import Analysis, ArmAnalysis, Interval
from service.reports import Reports
from service.studies import Studies

log = logging.getLogger("hps.service")

HEADLINE_FIGURE = "estimands"
"""The report's figure the note shows: every estimand with its interval against δ."""
MARK = "<!-- written by hps -->"
"""The note's first line: a note that starts with it is hps's to overwrite."""


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _interval(value: Interval | None) -> str:
    if value is None:
        return "n/a"
    return f"{_number(value.estimate)} [{_number(value.low)}, {_number(value.high)}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _arm_row(arm: ArmAnalysis) -> str:
    no_warmup = f"{_number(arm.best_loss_w0)} (lr {_number(arm.best_lr_w0, 3)})"
    tuned = (
        f"{_number(arm.best_loss)} (lr {_number(arm.best_lr, 3)}, warmup {arm.best_warmup})"
        if arm.best_warmup is not None
        else _number(arm.best_loss)
    )
    cells = [arm.arm, no_warmup, tuned, _interval(arm.regret)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown(analysis: Analysis) -> str:
    """The note for ``analysis``: the verdict first, then why, then the arms, then provenance."""
    verdict = analysis.verdict
    headline = f"Verdict: {verdict.outcome.value}" if verdict is not None else "No verdict"
    lines = [MARK, f"# {_cell(analysis.study_name)} — {headline}", "", analysis.statement, ""]
    figure = f"/v1/studies/{analysis.study_id}/figures/{HEADLINE_FIGURE}.png"
    lines += [f"![every estimand with its 95 % interval, against the margin δ]({figure})", ""]
    if verdict is not None:
        lines += [f"- {reason}" for reason in verdict.reasons]
        lines += [
            f"- RAdam's warmup regret Δ: {_interval(verdict.radam_regret)}; Adam's: "
            f"{_interval(verdict.adam_regret)}; margin δ = {_number(verdict.margin)}",
            "",
        ]
    elif analysis.verdict_unavailable:
        lines += [f"_{analysis.verdict_unavailable}_", ""]
    for workload in analysis.workloads:
        lines += [
            f"## {_cell(workload.label)} ({workload.role})",
            "",
            "| arm | best loss, no warmup | best loss, warmup tuned | warmup regret Δ [95 %] |",
            "| --- | --- | --- | --- |",
            *(_arm_row(arm) for arm in workload.arms),
            "",
        ]
    state = "all trials" if analysis.complete else "the trials finished so far (not complete)"
    lines.append(
        f"_From {state}, {len(analysis.seeds)} paired seeds each. Figures and intervals in "
        f"full: `hps report {analysis.study_id}` (GET /v1/studies/{analysis.study_id}/report)._"
    )
    return "\n".join(lines) + "\n"


class Notes:
    """Writes studies' answers into their dashboard notes."""

    def __init__(self, studies: Studies, reports: Reports) -> None:
        self._studies = studies
        self._reports = reports

    def write(self, study_id: int, *, patient: bool = False) -> Analysis:
        """Analyse the study now and write its note; returns the analysis. NotFound if unknown;
        Busy when every analysis slot stays taken, unless ``patient`` (``Reports.analysis``).

        A note a person wrote some other way (one not starting with MARK) is kept: hps's
        goes below it.
        """
        analysis = self._reports.analysis(study_id, patient=patient)
        study = self._studies.optuna_study(self._studies.handle(study_id))
        mine = markdown(analysis)
        current = get_note(study)
        if current and not current.startswith(MARK):
            mine = f"{current.rstrip()}\n\n{mine}"
        save_note(study, mine)
        return analysis

    def write_finished(self) -> list[int]:
        """Write the note of every study found done since the last call (or since this process
        started: a restart writes them again); returns their ids."""
        for study_id in self._studies.running_ids():
            self._studies.is_done(study_id)  # a study found done is queued, once
        written = []
        for study_id in self._studies.take_newly_done():
            try:
                self.write(study_id, patient=True)  # in the background: no one is waiting
            except Exception:  # one study's note must not stop the others'
                log.exception("writing the dashboard note of study %d failed", study_id)
                continue
            written.append(study_id)
        return written


async def watch(notes: Notes, interval_s: float) -> None:
    """Write finished studies' notes every ``interval_s``, off the event loop."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            written = await run_in_threadpool(notes.write_finished)
            if written:
                log.info("wrote the dashboard note of finished study(ies) %s", written)
        except Exception:
            log.exception("dashboard note pass failed")
