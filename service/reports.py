"""Analyses and reports of stored studies: the domain functions behind the analysis routes."""

from __future__ import annotations

from api_schemas.analysis import Analysis
from service.analysis import analyse
from service.report import html
from service.studies import Studies


def study_analysis(studies: Studies, study_id: int) -> Analysis:
    """The analysis of every trial the study has now (finished or not: see ``complete``).

    Raises NotFound for an unknown study.
    """
    handle = studies.handle(study_id)
    trials = studies.frozen_trials(handle.id)
    return analyse(handle.id, handle.name, handle.spec, trials)


def study_report(studies: Studies, study_id: int) -> str:
    """The study's report: one self-contained HTML page."""
    return html(study_analysis(studies, study_id))
