"""Reports: papermill runs with parameters, HTML output, and nbval over every notebook."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO, run_cli
from workbench.errors import UnknownNameError
from workbench.reports import available_reports, coerce, run_report
from workbench.settings import Settings
from workbench.stack import Endpoints

pytestmark = pytest.mark.stack


def test_every_notebook_has_a_parameters_cell() -> None:
    import nbformat

    assert {"overview", "catalog"} <= set(available_reports())
    for name in available_reports():
        notebook = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"


def test_report_run_writes_notebook_and_html(stack: Endpoints, settings: Settings) -> None:
    result = run_cli(
        "report",
        "run",
        "overview",
        "-p",
        "title",
        "Quarterly health check",
        "-p",
        "show_details",
        "false",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    reports = settings.home / "reports" / "overview"
    html_files = sorted(reports.glob("overview-*.html"))
    notebooks = sorted(reports.glob("overview-*.ipynb"))
    assert html_files and notebooks
    page = html_files[-1].read_text()
    assert "Quarterly health check" in page
    assert "postgres" in page and "redis" in page
    password = stack.postgres_url.split(":")[2].split("@")[0]
    assert password not in page


def test_unknown_report_and_parameter_get_suggestions(settings: Settings) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'overview'"):
        run_report(settings, "overveiw")
    with pytest.raises(UnknownNameError, match="Did you mean 'title'"):
        run_report(settings, "overview", {"titel": "x"})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("2.5", 2.5),
        ("true", True),
        ("False", False),
        ("none", None),
        ("2026-10", "2026-10"),
    ],
)
def test_parameter_values_are_coerced(raw: str, value: object) -> None:
    assert coerce(raw) == value


def test_notebooks_pass_nbval(stack: Endpoints) -> None:
    """Every shipped notebook runs top to bottom under nbval against the session's stack."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(REPO / "notebooks"),
            str(REPO / "notebooks"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO / "notebooks",
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
