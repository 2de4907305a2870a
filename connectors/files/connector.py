"""Each file of a directory is a stream; each row an entity; its inferred schema is registered.

Supported: ``*.csv``, ``*.parquet``, ``*.jsonl`` / ``*.ndjson``. A file's stem names its stream
and entity type (``customers.csv`` -> ``customers``). The primary key is the configured column
(default ``id``) when the file has it, else the row number. The cursor is the file's
modification time and a row number: incremental syncs read modified files whole, and an
unchanged file only from its last committed row (so an interrupted sync resumes mid-file);
unchanged rows publish nothing. A full sync also detects rows (and files) that disappeared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
from pydantic import Field, field_validator

from connectors.base.capabilities import (
    Adapter,
    Capability,
    EntityRecord,
    HealthStatus,
    SchemaDeclaration,
    Stream,
)
from connectors.base.config import ConnectorConfig
from connectors.base.errors import ConnectorConfigError, SourceRequestError
from connectors.base.schema import jsonable, polars_schema

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MTIME = "_file_mtime_ns"


class FilesConfig(ConnectorConfig):
    path: Path = Field(description="Directory holding the files.")
    pattern: str = Field(default="*", description="Glob of file names within the directory.")
    primary_key: str = Field(default="id", description="Key column; row number when absent.")
    display_column: str | None = Field(default=None, description="Column naming each entity.")
    infer_schema_length: int = Field(default=10_000, ge=1)

    @field_validator("path", mode="after")
    @classmethod
    def _directory(cls, value: Path) -> Path:
        value = value.expanduser()
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value


class FilesConnector(Adapter[FilesConfig]):
    """CSV, Parquet and JSON Lines files of a directory, with Polars schema inference."""

    name = "files"
    version = "0.1.0"
    description = "CSV, Parquet and JSON Lines files of a directory (schemas inferred)."
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ, Capability.BATCH})
    config_class = FilesConfig

    def files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(self.config.path.glob(self.config.pattern)):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                stem = _stream_name(path.stem)
                if stem in found:
                    raise ConnectorConfigError(
                        f"{found[stem].name} and {path.name} both map to stream {stem!r}.",
                        remedy="rename one, or narrow `pattern`.",
                    )
                found[stem] = path
        return found

    def check(self) -> None:
        if not self.config.path.is_dir():
            raise SourceRequestError(f"{self.config.path} is not a directory any more.")

    def health(self) -> HealthStatus:
        self.check()
        return HealthStatus(True, f"{len(self.files())} files")

    def streams(self) -> list[Stream]:
        return [
            Stream(name, name, self.config.primary_key, MTIME, f"rows of {path.name}")
            for name, path in self.files().items()
        ]

    def frame(self, path: Path) -> pl.DataFrame:
        kind = SUFFIXES[path.suffix.lower()]
        try:
            if kind == "csv":
                return pl.read_csv(
                    path, infer_schema_length=self.config.infer_schema_length, try_parse_dates=True
                )
            if kind == "parquet":
                return pl.read_parquet(path)
            return pl.read_ndjson(path, infer_schema_length=self.config.infer_schema_length)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SourceRequestError(
                f"{path} could not be read as {kind}: {exc}",
                remedy="fix or remove the file; the sync stopped before it.",
            ) from None

    def schemas(self) -> list[SchemaDeclaration]:
        return [
            SchemaDeclaration(
                f"files/{self.instance}/{name}",
                polars_schema(self.frame(path).schema, f"{path.name} rows"),
            )
            for name, path in self.files().items()
        ]

    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        path = self.files().get(stream.name)
        if path is None:
            return
        mtime = path.stat().st_mtime_ns
        # The cursor is [modification time, row number]: an unchanged file resumes at its last
        # committed row (read again, inclusive), a modified one is read whole.
        since_mtime, since_row = _cursor(cursor)
        if mtime < since_mtime:
            return
        first = since_row if mtime == since_mtime else 1
        frame = self.frame(path)
        if first > 1:
            frame = frame.slice(first - 1)
        for number, row in enumerate(frame.iter_rows(named=True), start=first):
            yield {**row, "_row": number, MTIME: mtime}

    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        row = dict(record)
        mtime = row.pop(MTIME)
        number = row.pop("_row")
        key = row.get(self.config.primary_key)
        source_id = str(key) if key is not None else str(number)
        display = row.get(self.config.display_column) if self.config.display_column else None
        return EntityRecord(
            entity_type=stream.entity_type,
            source_id=source_id,
            attributes=jsonable(row),
            display_name=str(display) if display is not None else None,
            cursor=[mtime, number],
        )


def _cursor(cursor: Any) -> tuple[int, int]:
    if cursor is None:
        return 0, 1
    if isinstance(cursor, list | tuple) and len(cursor) == 2:
        return int(cursor[0]), int(cursor[1])
    return int(cursor), 1  # a bare modification time


def _stream_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "file"
