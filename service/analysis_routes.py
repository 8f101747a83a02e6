"""Routes for a study's answer: the analysis as JSON, the report as an HTML page, its figures.

All three are bounded and cached by ``service.reports.Reports``. The router also accepts the
dashboard's login cookie (``service.app.ROUTERS``), so that the figure the dashboard's note
embeds loads in the browser that shows it; every route here is a read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse, Response

from api_schemas import ErrorBody
from api_schemas.analysis import Analysis
from service.deps import Id, ReportsDep
from service.reports import FIGURE_FORMATS

router = APIRouter(
    prefix="/v1/studies",
    tags=["analysis"],
    responses={
        404: {"model": ErrorBody, "description": "unknown id"},
        503: {"model": ErrorBody, "description": "every analysis slot is busy: retry"},
    },
)


@router.get("/{study_id}/analysis")
def get_analysis(study_id: Id, domain: ReportsDep) -> Analysis:
    """Warmup regret per arm with intervals, failure rates, sensitivities, the verdict
    (REMOVES / NEEDS / INCONCLUSIVE / INVALID) and the Ma & Yarats comparison.

    Runs on the trials there are now: ``complete`` says whether every trial is counted.
    """
    return domain.analysis(study_id)


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
def get_report(study_id: Id, domain: ReportsDep) -> HTMLResponse:
    """The analysis as one HTML page with its figures inlined: the verdict at the top."""
    return HTMLResponse(domain.page(study_id))


FigureFile = Annotated[
    str,
    Path(
        pattern=r"^[a-z_]+\.(png|svg)$",
        description="a figure's name and format, e.g. estimands.png (the report's figure ids)",
    ),
]


@router.get(
    "/{study_id}/figures/{figure}",
    response_model=None,
    responses={
        200: {
            "content": {media: {"schema": {"type": "string"}} for media in FIGURE_FORMATS.values()},
            "description": "the figure",
        }
    },
)
def get_figure(study_id: Id, figure: FigureFile, domain: ReportsDep) -> Response:
    """One of the report's figures, as PNG or SVG (``estimands.png`` is the headline one)."""
    name, fmt = figure.rsplit(".", 1)
    return Response(domain.figure(study_id, name, fmt), media_type=FIGURE_FORMATS[fmt])
