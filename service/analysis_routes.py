"""Routes for a study's answer: the analysis as JSON and the report as an HTML page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api_schemas import ErrorBody
from api_schemas.analysis import Analysis
from service import reports
from service.deps import Id, StudiesDep

router = APIRouter(
    prefix="/v1/studies",
    tags=["analysis"],
    responses={404: {"model": ErrorBody, "description": "unknown id"}},
)


@router.get("/{study_id}/analysis")
def get_analysis(study_id: Id, domain: StudiesDep) -> Analysis:
    """Warmup regret per arm with intervals, failure rates, sensitivities, the verdict
    (REMOVES / NEEDS / INCONCLUSIVE / INVALID) and the Ma & Yarats comparison.

    Runs on the trials there are now: ``complete`` says whether every trial is counted.
    """
    return reports.study_analysis(domain, study_id)


@router.get(
    "/{study_id}/report",
    # Not response_class=HTMLResponse: that would document the 404's JSON ErrorBody as HTML.
    response_model=None,
    responses={
        200: {
            "content": {"text/html": {"schema": {"type": "string"}}},
            "description": "a self-contained page",
        }
    },
)
def get_report(study_id: Id, domain: StudiesDep) -> HTMLResponse:
    """The analysis as one HTML page with its figures inlined: the verdict at the top."""
    return HTMLResponse(reports.study_report(domain, study_id))
