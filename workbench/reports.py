"""Parameterized notebook reports run with papermill and rendered to HTML.

Reports are the notebooks in ``notebooks/`` (installed as ``workbench.notebooks``); each has a
cell tagged ``parameters``. A run writes the executed notebook and its HTML rendering under
``DICTAMESH_HOME/reports/NAME/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from workbench.errors import DictaMeshError, MissingDependencyError, TerminalError, UnknownNameError
from workbench.settings import Settings, env_name


@dataclass(frozen=True)
class ReportRun:
    name: str
    notebook: Path
    html: Path
    parameters: dict[str, Any]


def _notebooks_dir() -> Path:
    return Path(str(resources.files("workbench.notebooks")))


def available_reports() -> list[str]:
    return sorted(path.stem for path in _notebooks_dir().glob("*.ipynb"))


def report_path(name: str) -> Path:
    names = available_reports()
    if name not in names:
        raise UnknownNameError("report", name, names)
    return _notebooks_dir() / f"{name}.ipynb"


def coerce(value: str) -> Any:
    """A command-line parameter value as the notebook expects it: int, float, bool or text."""
    lowered = value.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if lowered in {"none", "null"}:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def report_parameters(name: str) -> dict[str, Any]:
    """The parameters a report declares, with their defaults and inferred types."""
    papermill = _papermill()
    result: dict[str, Any] = papermill.inspect_notebook(str(report_path(name)))
    return result


def _papermill() -> Any:
    try:
        import papermill
    except ImportError as exc:
        raise MissingDependencyError("Reports", "reports", module="papermill") from exc
    return papermill


def run_report(
    settings: Settings,
    name: str,
    parameters: dict[str, str] | None = None,
    *,
    kernel_name: str = "python3",
    timeout: int = 600,
) -> ReportRun:
    """Execute a report with papermill and render it to HTML; raise if any cell failed."""
    papermill = _papermill()
    from nbconvert import HTMLExporter

    source = report_path(name)
    declared = report_parameters(name)
    values = {key: coerce(raw) for key, raw in (parameters or {}).items()}
    for key in values:
        if key not in declared:
            raise UnknownNameError(f"parameter of report {name!r}", key, declared)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out_dir = settings.home / "reports" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{name}-{stamp}.ipynb"
    # The kernel must see the same installation as the caller, even when settings came in code.
    os.environ.setdefault(env_name("home"), str(settings.home))
    try:
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=values,
            kernel_name=kernel_name,
            progress_bar=False,
            execution_timeout=timeout,
            cwd=str(out_dir),
        )
    except papermill.PapermillExecutionError as exc:
        raise TerminalError(
            f"Report {name!r} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}",
            remedy=f"open {executed} to see the failing cell.",
        ) from None
    except DictaMeshError:
        raise
    body, _resources = HTMLExporter().from_filename(str(executed))  # type: ignore[no-untyped-call]
    html_path = executed.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return ReportRun(name=name, notebook=executed, html=html_path, parameters=values)
