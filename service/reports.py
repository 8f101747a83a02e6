"""Analyses, report pages and figures of stored studies: bounded in number, cached when final.

The analysis reads every trial and the report renders seven matplotlib figures: seconds of CPU
each (BENCHMARKS.md, "Analysis"). Unbounded, a few readers refreshing a large study's report
would take every core the service has and stall the leases of every study. So:

- at most ``concurrency`` of them are computed at once, in the request threads; a request that
  cannot start one within ``wait_s`` is answered 503 ``busy`` with ``Retry-After``, never queued
  for ever;
- a **finished** study's analysis, page and figures are computed once and kept (an LRU of
  ``cache_size`` entries): FINISHED is derived from the trial counts and, once true, stays
  true with no trial changing again, so the cached answer is exact. A running study's answer
  is computed afresh each time, since a running trial's curve changes without any count moving.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from api_schemas import StudyState
from api_schemas.analysis import Analysis
from service.errors import HpsError, NotFound
from service.studies import Studies

if TYPE_CHECKING:
    from service.report.figures import Format

T = TypeVar("T")

FIGURE_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
"""The formats a figure is served in, with their media types."""


@dataclass(frozen=True)
class _Final:
    """Which study a request is about, and whether it was finished when the request came."""

    study_id: int
    done: bool


class Busy(HpsError):
    """Every analysis slot stayed taken for ``wait_s``: ask again shortly."""

    status_code = 503
    code = "busy"
    headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


class Reports:
    """The answers of stored studies, as JSON, one HTML page, or one figure at a time."""

    def __init__(
        self,
        studies: Studies,
        *,
        concurrency: int = 2,
        wait_s: float = 10.0,
        cache_size: int = 64,
    ) -> None:
        self._studies = studies
        self._slots = threading.BoundedSemaphore(concurrency)
        self._wait_s = wait_s
        self._cache: OrderedDict[Hashable, object] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def analysis(self, study_id: int, *, patient: bool = False) -> Analysis:
        """The analysis of every trial the study has now (finished or not: see ``complete``).

        Raises NotFound for an unknown study, and Busy when no slot frees in time, unless
        ``patient`` (a background writer, with no one waiting on it) waits for as long as it takes.
        """
        return self._answer(("analysis", study_id), study_id, self._analyse, patient=patient)

    def page(self, study_id: int) -> str:
        """The study's report: one self-contained HTML page."""
        from service.report import html  # matplotlib: loaded on the first report, not at start

        return self._answer(("page", study_id), study_id, lambda final: html(self._analyse(final)))

    def figure(self, study_id: int, name: str, fmt: str = "png") -> bytes:
        """One figure of the report (``service.report.FIGURES``) as PNG or SVG bytes."""
        from service.report import FIGURES, render

        if name not in FIGURES:
            raise NotFound(f"no figure {name!r}: the figures are {', '.join(FIGURES)}")
        if fmt not in FIGURE_FORMATS:
            raise NotFound(f"no format {fmt!r}: figures come as {', '.join(FIGURE_FORMATS)}")
        _, draw = FIGURES[name]
        image_format: Format = "png" if fmt == "png" else "svg"
        return self._answer(
            ("figure", study_id, name, fmt),
            study_id,
            lambda final: render(draw(self._analyse(final)), image_format),
        )

    def _analyse(self, final: _Final) -> Analysis:
        # Inside a slot. The page and the figures of a finished study share its one analysis.
        key = ("analysis", final.study_id)
        if final.done and (cached := self._cached(key)) is not None:
            return cast(Analysis, cached)
        analysis = self._studies.analyse(final.study_id)
        if final.done:
            self._keep(key, analysis)
        return analysis

    def _answer(
        self,
        key: Hashable,
        study_id: int,
        compute: Callable[[_Final], T],
        *,
        patient: bool = False,
    ) -> T:
        final = _Final(study_id, self._studies.state(study_id) == StudyState.FINISHED)
        if final.done and (cached := self._cached(key)) is not None:
            return cast(T, cached)
        if not self._slots.acquire(timeout=None if patient else self._wait_s):
            raise Busy(
                f"every analysis slot has been busy for {self._wait_s:g} s (other reports are "
                "being computed): ask again in a few seconds"
            )
        try:
            value = compute(final)
        finally:
            self._slots.release()
        if final.done:
            self._keep(key, value)
        return value

    def _cached(self, key: Hashable) -> object | None:
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                self._cache.move_to_end(key)
            return value

    def _keep(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
