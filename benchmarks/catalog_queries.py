"""Catalog reads at scale: entity lookups and lineage walks with 1M entities and 3M edges.

    python -m benchmarks.catalog_queries --entities 1000000 --edges 3000000

The tables are filled inside Postgres (generate_series), not through the pipeline: this measures
reads. Entity ids are the same UUIDv5 of the natural key the projector writes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import psycopg

from benchmarks.common import Machine, isolated_stack
from workbench.catalog.api import Catalog
from workbench.catalog.lineage import downstream, upstream
from workbench.catalog.model import entity_id
from workbench.db import make_engine
from workbench.events.producer import EventProducer


def _fill(url: str, entities: int, edges: int) -> None:
    # Postgres 16 has no built-in UUIDv5: entity ids are computed here and streamed with COPY.
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY dictamesh_entity_catalog (id, domain, source_system, entity_type, source_id, "
            "version, attributes, display_name) FROM STDIN"
        ) as copy:
            for n in range(entities):
                copy.write_row(
                    (
                        entity_id("bench", "order", str(n)),
                        f"domain-{n % 20}",
                        "bench",
                        "order",
                        str(n),
                        1,
                        f'{{"customer": "c{n % 997}", "amount": {n % 1000}}}',
                        f"Order {n}",
                    )
                )
        conn.commit()
        # Relationships and lineage edges: the same pseudo-random graph over those nodes.
        cursor.execute(
            "CREATE TEMP TABLE ids AS "
            "SELECT row_number() OVER () - 1 AS n, id FROM dictamesh_entity_catalog"
        )
        cursor.execute("CREATE INDEX ON ids (n)")
        cursor.execute(
            """
            INSERT INTO dictamesh_entity_relationships
                (id, from_entity_id, to_entity_id, relationship_type)
            SELECT gen_random_uuid(), a.id, b.id, 'rel' || (g %% 3)
            FROM generate_series(0::bigint, %(edges)s - 1) g
            JOIN ids a ON a.n = (g * 7919) %% %(entities)s
            JOIN ids b ON b.n = (g * 104729 + 13) %% %(entities)s
            ON CONFLICT DO NOTHING
            """,
            {"edges": edges, "entities": entities},
        )
        cursor.execute(
            """
            INSERT INTO dictamesh_data_lineage (source_dataset, target_dataset, job_name)
            SELECT 'bench/t' || ((g * 7919) %% %(entities)s),
                   'bench/t' || ((g * 104729 + 13) %% %(entities)s), 'job'
            FROM generate_series(0::bigint, %(edges)s - 1) g
            ON CONFLICT DO NOTHING
            """,
            {"edges": edges, "entities": entities},
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def _timed(samples: int, action: Callable[[], object]) -> dict[str, float]:
    durations = []
    for _ in range(samples):
        started = time.perf_counter()
        action()
        durations.append((time.perf_counter() - started) * 1000)
    durations.sort()
    return {
        "p50_ms": statistics.median(durations),
        "p95_ms": durations[int(0.95 * (len(durations) - 1))],
        "p99_ms": durations[int(0.99 * (len(durations) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=3_000_000)
    parser.add_argument("--samples", type=int, default=500)
    options = parser.parse_args()
    rng = random.Random(7)
    with isolated_stack() as endpoints:
        started = time.perf_counter()
        _fill(endpoints.postgres_url, options.entities, options.edges)
        load = time.perf_counter() - started
        catalog = Catalog(
            make_engine(endpoints.postgres_url), EventProducer(endpoints.kafka_bootstrap)
        )
        catalog.get("bench", "order", "1")  # warm the pool

        def lookup() -> object:
            return catalog.get("bench", "order", str(rng.randrange(options.entities)))

        def relationships() -> object:
            return catalog.relationships("bench", "order", str(rng.randrange(options.entities)))

        with psycopg.connect(endpoints.postgres_url) as conn:

            def lineage_down() -> object:
                return downstream(conn, f"bench/t{rng.randrange(options.entities)}", depth=5)

            def lineage_up() -> object:
                return upstream(conn, f"bench/t{rng.randrange(options.entities)}", depth=5)

            def search_selective() -> object:  # one customer: ~1 in 997 entities match
                return catalog.entities(text=f"c{rng.randrange(997)}", limit=100)

            def search_broad() -> object:  # every entity's name matches: rank them all
                return catalog.entities(text="order", limit=100)

            def facets() -> object:
                return catalog.facet_counts("domain", text=f"c{rng.randrange(997)}")

            results = {
                "entity lookup (wb.catalog.get)": _timed(options.samples, lookup),
                "text search, ~1,000 matches, first page by relevance": _timed(
                    min(options.samples, 200), search_selective
                ),
                "text search matching every entity, first page by relevance": _timed(
                    5, search_broad
                ),
                "facet counts under a text search": _timed(min(options.samples, 200), facets),
                "relationships of an entity": _timed(options.samples, relationships),
                "lineage downstream, depth 5": _timed(min(options.samples, 200), lineage_down),
                "lineage upstream, depth 5": _timed(min(options.samples, 200), lineage_up),
            }
    print(f"machine: {Machine.current().description}")
    print(
        f"{options.entities:,} entities, {options.edges:,} relationships and lineage edges "
        f"(filled in {load:.0f} s)"
    )
    print("| query | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, figures in results.items():
        print(
            f"| {name} | {figures['p50_ms']:.2f} | {figures['p95_ms']:.2f} | "
            f"{figures['p99_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
