"""Every figure draws from an analysis alone, as PNG and as SVG; the page inlines them."""

from __future__ import annotations

import re

import pytest

from api_schemas.analysis import Analysis
from service.report import FIGURES, html, render
from tests.service.analysis import simulate

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return simulate.analysis()


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_renders_as_png_and_svg(analysis: Analysis, name: str) -> None:
    _, draw = FIGURES[name]
    figure = draw(analysis)
    assert render(figure, "png").startswith(PNG)
    assert b"<svg" in render(figure, "svg")[:1000]


def test_the_headline_figure_shows_every_estimand_against_the_margin(analysis: Analysis) -> None:
    name, (_, draw) = next(iter(FIGURES.items()))
    assert name == "estimands"
    figure = draw(analysis)
    assert analysis.verdict is not None
    assert analysis.verdict.outcome.value in figure.get_suptitle()
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "postln_transformer: Γ radam - tuned adam" in labels
    assert "postln_transformer: Δ radam" in labels and "postln_transformer: Δ adam" in labels
    margins = [line.get_xdata()[0] for line in figure.axes[0].get_lines()[-2:]]
    assert sorted(margins) == [-analysis.verdict.margin, analysis.verdict.margin]


def test_the_lr_figure_shows_every_workload_and_the_verdict(analysis: Analysis) -> None:
    figure = FIGURES["lr"][1](analysis)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["postln_transformer (subject)", "digits_mlp (negative control)"]
    assert analysis.verdict is not None
    assert analysis.verdict.outcome.value in figure.get_suptitle()
    legend = figure.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "adam, w=0",
        "adam, best warmup per lr",
        "radam, w=0",
        "radam, best warmup per lr",
    ]
    # The simulated grid fails at its highest lr (chance loss), as a grid should.
    w0 = figure.axes[0].get_lines()[0].get_ydata()
    assert w0[-1] == pytest.approx(simulate.CHANCE)


def test_the_warmup_figure_labels_each_arm_with_its_regret(analysis: Analysis) -> None:
    figure = FIGURES["warmup"][1](analysis)
    legend = figure.axes[0].get_legend()
    assert legend is not None
    labels = [text.get_text() for text in legend.get_texts()]
    assert [label.split(":")[0] for label in labels] == ["adam", "radam"]
    assert all("Δ=" in label for label in labels)


def test_the_page_puts_the_verdict_first_and_inlines_every_figure(analysis: Analysis) -> None:
    page = html(analysis)
    assert analysis.verdict is not None
    assert page.index(analysis.verdict.outcome.value) < page.index("<img")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(FIGURES)
    assert "digits_mlp" in page and "Controls" in page


def test_the_stable_range_figure_marks_an_lr50_beyond_the_grid(analysis: Analysis) -> None:
    figure = FIGURES["stable"][1](analysis)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "adam w=0" in labels and "radam w=100" in labels
    ranges = analysis.workloads[0].arms[0].stable_range
    assert all(r.lr50.estimate is not None or r.lr50.censored for r in ranges)


def test_a_free_search_analysis_draws_too() -> None:
    analysis = simulate.analysis()
    analysis.verdict = None
    analysis.verdict_unavailable = "the verdict needs a balanced grid"
    page = html(analysis)
    assert "No verdict" in page
