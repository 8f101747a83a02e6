"""``hps report``: help, errors, and the figures it writes (the happy path runs in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hps.cli import app
from hps.cli.report import _write_figures
from tests.service.analysis import simulate

runner = CliRunner()
UNREACHABLE = "http://127.0.0.1:9"


def test_report_has_help() -> None:
    result = runner.invoke(app, ["report", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output and "--html" in result.output


def test_report_without_a_service_says_how_to_start_one() -> None:
    result = runner.invoke(app, ["report", "1", "--url", UNREACHABLE, "--token", "hps_x"])
    assert result.exit_code == 2
    assert "hps serve" in result.output


def test_figures_are_written_as_png_and_svg(tmp_path: Path) -> None:
    written = _write_figures(simulate.analysis(), tmp_path / "figures")
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{n}.{x}"
        for n in ("estimands", "lr", "warmup", "effects", "stable", "failures", "curves")
        for x in ("png", "svg")
    )
    assert all(p.stat().st_size > 1000 for p in written)
