"""Connector sync: DictaMesh's files connector vs dlt, loading the same JSON Lines file.

DictaMesh: `FilesConnector` -> `SyncEngine` (content hashes, versions, one CloudEvent per record,
broker acknowledgements, cursors committed per batch) -> the catalog projector, until every
record is queryable in the catalog. dlt 1.31: a `@dlt.resource` over the same file with
`write_disposition="merge"`, `primary_key="id"` and `dlt.sources.incremental("updated_at")`
into the same PostgreSQL. Both then run again with nothing changed (incremental).

    .venv/bin/python -m benchmarks.connectors_bench --records 20000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import isolated_stack


def write_records(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            out.write(
                json.dumps(
                    {
                        "id": i,
                        "name": f"Customer {i}",
                        "email": f"c{i}@example.com",
                        "plan": ["free", "pro", "team"][i % 3],
                        "score": i % 97,
                        "updated_at": f"2026-01-01T00:00:{i % 60:02d}.{i:06d}",
                    }
                )
                + "\n"
            )


def dictamesh(endpoints: Any, folder: Path, count: int) -> dict[str, float]:
    from connectors.base.sync import SyncEngine
    from connectors.files import FilesConfig, FilesConnector
    from workbench import db
    from workbench.events.producer import EventProducer, wait_for_all
    from workbench.events.workers import Workers, build_runners

    engine = db.make_engine(endpoints.postgres_url)
    producer = EventProducer(endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url)
    sync = SyncEngine(engine, producer, progress=False)
    connector = FilesConnector(FilesConfig(path=folder, batch_size=2000), instance="bench")
    # The projection runs while the sync publishes, as under `dictamesh serve`.
    workers = Workers(build_runners(endpoints, ["catalog"])).start()
    try:
        started = time.perf_counter()
        result = sync.sync(connector, full=True)
        published = time.perf_counter() - started
        assert result.records_published == count, result
        wait_for_all(result.handles, timeout=900)
        queryable = time.perf_counter() - started
    finally:
        workers.stop()
    started = time.perf_counter()
    again = sync.sync(connector)
    unchanged = time.perf_counter() - started
    assert again.records_published == 0
    engine.dispose()
    return {"published": published, "queryable": queryable, "unchanged": unchanged}


def dlt_peer(endpoints: Any, path: Path, count: int, workdir: Path) -> dict[str, float]:
    import dlt
    from sqlalchemy.engine import make_url

    from workbench.db import sqlalchemy_url

    url = make_url(sqlalchemy_url(endpoints.postgres_url))
    credentials = (
        f"postgresql://{url.username}:{url.password or ''}@{url.host or 'localhost'}:"
        f"{url.port or 5432}/{url.database}"
    )

    @dlt.resource(name="customers", write_disposition="merge", primary_key="id")
    def customers(
        updated_at: Any = dlt.sources.incremental("updated_at", initial_value="1970"),  # noqa: B008 - dlt's documented idiom
    ) -> Any:
        with path.open() as source:
            rows = [json.loads(line) for line in source]
        yield [r for r in rows if r["updated_at"] >= updated_at.last_value]

    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.postgres(credentials),
        dataset_name="dlt_bench",
        pipelines_dir=str(workdir),
    )
    started = time.perf_counter()
    pipeline.run(customers())
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    pipeline.run(customers())
    unchanged = time.perf_counter() - started
    return {"loaded": loaded, "unchanged": unchanged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, isolated_stack() as endpoints:
        folder = Path(scratch) / "files"
        folder.mkdir()
        path = folder / "customers.jsonl"
        write_records(path, args.records)
        ours = dictamesh(endpoints, folder, args.records)
        try:
            theirs: dict[str, float] | None = dlt_peer(
                endpoints, path, args.records, Path(scratch) / "dlt"
            )
        except ImportError:
            theirs = None
    n = args.records
    print(f"records: {n}")
    print(
        f"DictaMesh full sync: published+acknowledged {ours['published']:.2f} s "
        f"({n / ours['published']:,.0f} records/s); queryable in the catalog "
        f"{ours['queryable']:.2f} s ({n / ours['queryable']:,.0f} records/s); "
        f"unchanged incremental {ours['unchanged']:.2f} s"
    )
    if theirs is None:
        print("dlt: not installed (pip install 'dictamesh-workbench[bench]')")
        return
    print(
        f"dlt merge load: {theirs['loaded']:.2f} s ({n / theirs['loaded']:,.0f} records/s); "
        f"unchanged incremental {theirs['unchanged']:.2f} s"
    )
    print(
        f"ratio (dlt load s / DictaMesh queryable s): {theirs['loaded'] / ours['queryable']:.2f}x"
    )


if __name__ == "__main__":
    main()
