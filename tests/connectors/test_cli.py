"""`dictamesh sync`, `connectors list --health`, `connectors runs`, `wb.connectors`, scaffold."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import BIN, run_cli
from workbench.errors import UnknownNameError


def test_scaffolded_connector_tests_pass_as_generated(tmp_path: Path) -> None:
    made = run_cli("scaffold", "connector", "acme_crm", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    root = tmp_path / "acme_crm"
    assert (root / "acme_crm_connector" / "connector.py").exists()
    assert (
        'acme_crm = "acme_crm_connector:AcmeCrmConnector"' in (root / "pyproject.toml").read_text()
    )
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "3 passed" in tests.stdout
    lint = subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", "."], cwd=root, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout
    again = run_cli("scaffold", "connector", "acme_crm", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = run_cli("scaffold", "connector", "Acme-CRM", "--dir", str(tmp_path))
    assert bad.returncode == 1 and "lower case" in bad.stderr


@pytest.mark.stack
def test_sync_command_and_runs(workbench: Any, workers: Any, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "people.csv").write_text("id,name\n1,Ada\n2,Grace\n3,Linus\n")
    instance = f"drop-{uuid.uuid4().hex[:6]}"
    connectors_file = workbench.settings.home / "connectors.yaml"
    existing = yaml.safe_load(connectors_file.read_text()) if connectors_file.exists() else {}
    existing[instance] = {"connector": "files", "path": str(folder), "domain": "people"}
    connectors_file.write_text(yaml.safe_dump(existing))

    synced = run_cli("sync", instance, "--full", "--wait", timeout=300)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert f"{instance}: full sync succeeded" in synced.stdout
    assert "published 3" in synced.stdout
    person = workbench.catalog.get(instance, "people", "2")
    assert person is not None and person.domain == "people"

    again = run_cli("sync", instance)
    assert again.returncode == 0 and "incremental sync succeeded" in again.stdout
    assert "published 0" in again.stdout

    runs = run_cli("connectors", "runs", instance)
    assert runs.returncode == 0 and runs.stdout.count("succeeded") == 2

    listed = run_cli("connectors", "list", "--health")
    assert listed.returncode == 0, listed.stderr
    assert instance in listed.stdout and "healthy" in listed.stdout

    missing = run_cli("sync", "no-such-connector")
    assert missing.returncode == 1 and "Unknown connector" in missing.stderr

    report = run_cli("report", "run", "sync", "-p", "connector", instance, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:] + report.stdout[-2000:]
    home = workbench.settings.home
    page = sorted((home / "reports" / "sync").glob("sync-*.html"))[-1].read_text()
    assert instance in page and "succeeded" in page and "people" in page


@pytest.mark.stack
def test_workbench_connectors_mapping(workbench: Any, tmp_path: Path) -> None:
    connectors = workbench.connectors
    assert {"chatwoot", "rest", "sql", "files"} <= set(connectors)
    assert "chatwoot" in repr(connectors)
    with pytest.raises(UnknownNameError, match="Did you mean 'files'"):
        connectors["filez"]
    handle = connectors.add("scratch", connector="files", path=str(tmp_path))
    assert handle.capabilities == ["batch", "read"]
    assert "scratch" in repr(handle) and handle.health().healthy
    broken = connectors.add(
        "broken",
        connector="chatwoot",
        base_url="http://127.0.0.1:9",
        account_id=1,
        api_access_token="s3cret",
        retries=1,
    )
    status = broken.health()
    assert not status.healthy and "s3cret" not in status.detail
    frame = connectors.status()
    assert {"scratch", "broken"} <= set(frame["instance"].to_list())
    assert set(connectors.installed()["name"].to_list()) >= {"chatwoot", "files", "rest", "sql"}
