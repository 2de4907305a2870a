"""`pip install .` (not editable) into a fresh venv gives a working `dictamesh`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from workbench.stack import Endpoints


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(out.glob("dictamesh_workbench-*.whl"))


def test_wheel_carries_dashboards_notebooks_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "workbench/dashboards/overview.py",
        "workbench/dashboards/layout.py",
        "workbench/notebooks/overview.ipynb",
        "workbench/migrations/env.py",
        "workbench/migrations/script.py.mako",
        "workbench/migrations/versions/0001_catalog_foundation.py",
        "workbench/api/templates/login.html",
        "workbench/py.typed",
        "connectors/base/__init__.py",
    }
    assert expected <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "dictamesh = workbench.cli:main" in text
    assert "overview = workbench.dashboards.overview:PAGE" in text


@pytest.mark.stack
def test_fresh_venv_install_works(wheel: Path, tmp_path: Path, stack: Endpoints) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        # The CPU build of torch, as `make install` does; otherwise pip picks a CUDA build.
        [str(venv / "bin" / "pip"), "install", "--quiet", "torch==2.13.0", f"{wheel}[all]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DICTAMESH_HOME": str(tmp_path / "home"),
        "DICTAMESH_POSTGRES_URL": stack.postgres_url,
        "DICTAMESH_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "DICTAMESH_REDIS_URL": stack.redis_url,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "dictamesh"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=tmp_path,
        )

    status = run("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("healthy") == 3
    history = run("migrate", "history")
    assert history.returncode == 0, history.stderr
    assert "0001" in history.stdout
    reports = run("report", "list")
    assert reports.returncode == 0, reports.stderr
    assert "overview" in reports.stdout
    pages = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from workbench.dashboards.layout import discover_pages;"
            "import workbench.dashboards as d;"
            "print(d.__file__); print([p.slug for p in discover_pages()])",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert pages.returncode == 0, pages.stderr
    assert str(venv) in pages.stdout, "must import from the installed copy, not the source tree"
    pages_in_order = [
        "overview",
        "catalog",
        "lineage",
        "events",
        "search",
        "config",
        "billing",
        "connectors",
        "health",
    ]
    assert str(pages_in_order) in pages.stdout
