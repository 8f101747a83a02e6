"""The study report: figures drawn with matplotlib from an ``Analysis``, and an HTML page.

``html(analysis)`` is the whole page (``GET /v1/studies/{id}/report``); ``FIGURES`` and
``render`` give each figure as PNG or SVG (``hps report --figures DIR``).
"""

from service.report.figures import FIGURES, render
from service.report.page import html

__all__ = ["FIGURES", "html", "render"]
