"""The files connector: CSV, Parquet and JSON Lines, schemas inferred with Polars."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from connectors.base.config import build_config
from connectors.base.errors import ConnectorConfigError
from connectors.files import FilesConfig, FilesConnector
from workbench.events.producer import wait_for_all


def make_files(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "customers.csv").write_text(
        "id,name,signed_up,score\n1,Ada,2026-01-02,3.5\n2,Grace,2026-01-03,4.0\n"
    )
    pl.DataFrame({"id": [10, 11], "amount": [9.5, 20.0], "customer_id": [1, 2]}).write_parquet(
        folder / "payments.parquet"
    )
    (folder / "events.jsonl").write_text(
        '{"kind": "login", "user": 1}\n{"kind": "logout", "user": 1, "extra": {"ip": "x"}}\n'
    )
    (folder / "notes.txt").write_text("ignored")


def test_streams_schemas_and_records(tmp_path: Path) -> None:
    make_files(tmp_path)
    files = FilesConnector(FilesConfig(path=tmp_path, display_column="name"), instance="drop")
    streams = {s.name: s for s in files.streams()}
    assert set(streams) == {"customers", "payments", "events"}
    schemas = {d.subject: d.schema["properties"] for d in files.schemas()}
    assert schemas["files/drop/customers"]["signed_up"]["format"] == "date"
    assert schemas["files/drop/customers"]["score"]["type"] == ["number", "null"]
    assert schemas["files/drop/payments"]["id"]["type"] == ["integer", "null"]
    assert schemas["files/drop/events"]["extra"]["type"] == ["object", "null"]
    customers = [
        files.map_record(streams["customers"], r) for r in files.read(streams["customers"])
    ]
    assert [(c.source_id, c.display_name) for c in customers] == [("1", "Ada"), ("2", "Grace")]
    assert customers[0].attributes["signed_up"] == "2026-01-02"
    events = [files.map_record(streams["events"], r) for r in files.read(streams["events"])]
    assert [e.source_id for e in events] == ["1", "2"]  # no id column: the row number
    mtime, row = customers[1].cursor
    assert row == 2
    assert list(files.read(streams["customers"], cursor=[mtime + 1, 1])) == []  # older file
    resumed = list(files.read(streams["customers"], cursor=[mtime, 2]))  # from row 2 on
    assert [r["id"] for r in resumed] == [2]


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConnectorConfigError, match=r"path: .*is not a directory"):
        build_config(FilesConfig, "drop", {"path": str(tmp_path / "missing")})
    (tmp_path / "a.csv").write_text("id\n1\n")
    (tmp_path / "a.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(ConnectorConfigError, match="both map to stream 'a'"):
        FilesConnector(FilesConfig(path=tmp_path), instance="x").streams()


@pytest.mark.stack
def test_files_sync_through_the_pipeline(workbench: Any, workers: Any, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    make_files(folder)
    instance = f"drop-{uuid.uuid4().hex[:6]}"
    handle = workbench.connectors.add(instance, connector="files", path=str(folder))
    result = handle.sync(full=True, progress=False)
    assert result.records_published == 6
    wait_for_all(result.handles, timeout=60)
    assert workbench.schemas.get(f"files/{instance}/payments").version == 1
    assert workbench.catalog.get(instance, "payments", "11").attributes["amount"] == 20.0
    # A changed file is re-read: one row edited, one removed (found by the full sync).
    (folder / "customers.csv").write_text("id,name,signed_up,score\n1,Ada L.,2026-01-02,3.5\n")
    stamp = os.stat(folder / "customers.csv").st_mtime_ns + 10**9
    os.utime(folder / "customers.csv", ns=(stamp, stamp))
    again = handle.sync(full=True, progress=False)
    assert (again.records_published, again.records_deleted) == (2, 1)
    wait_for_all(again.handles, timeout=60)
    assert workbench.catalog.get(instance, "customers", "1").attributes["name"] == "Ada L."
    assert workbench.catalog.get(instance, "customers", "2").is_deleted
