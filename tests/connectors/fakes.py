"""A connector over a JSON file of records, for engine tests (also run in killed subprocesses)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from connectors.base.capabilities import Adapter, Capability, EntityRecord, Link, Stream
from connectors.base.config import ConnectorConfig
from connectors.base.errors import SourceUnavailableError


class ListConfig(ConnectorConfig):
    path: Path
    kill_after: int | None = None  # SIGKILL this process after yielding that many records
    fail_after: int | None = None  # raise a transient error after that many records


class ListAdapter(Adapter[ListConfig]):
    """Records {"id", "updated_at", "name", "group"} from a JSON file, ordered by updated_at."""

    name = "list"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ})
    config_class = ListConfig

    def streams(self) -> list[Stream]:
        return [Stream("items", "item", "id", "updated_at")]

    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        records = json.loads(self.config.path.read_text())
        records.sort(key=lambda r: (r["updated_at"], r["id"]))
        calls = self.config.path.with_suffix(".calls")
        with calls.open("a") as log:
            log.write(json.dumps(cursor) + "\n")
        for count, record in enumerate(
            (r for r in records if cursor is None or r["updated_at"] >= cursor), start=1
        ):
            if self.config.kill_after is not None and count > self.config.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if self.config.fail_after is not None and count > self.config.fail_after:
                raise SourceUnavailableError("the source went away", status=503)
            yield record

    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        return EntityRecord(
            entity_type="item",
            source_id=str(record["id"]),
            attributes={"name": record["name"], "updated_at": record["updated_at"]},
            display_name=record["name"],
            links=[Link("member_of", "group", str(record["group"]))],
            cursor=record["updated_at"],
        )


def records(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "updated_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "name": f"item {i}",
            "group": i % 3,
        }
        for i in range(start, start + count)
    ]
