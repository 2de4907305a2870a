"""The Workbench facade used in notebooks: ``wb = workbench.connect()``."""

from __future__ import annotations

import html
from contextlib import ExitStack
from functools import cached_property
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import Engine, text

from workbench import db
from workbench.analytics.views import Analytics
from workbench.catalog.api import Catalog
from workbench.catalog.schemas import SchemaRegistry
from workbench.events.api import Events
from workbench.events.producer import EventProducer
from workbench.events.topics import ensure_topics
from workbench.observability import HealthReport, record_health
from workbench.settings import Settings, load_settings, redact_url
from workbench.stack import Endpoints, Stack, ensure_up

if TYPE_CHECKING:
    from connectors.base.api import Connectors
    from workbench.billing.service import Billing
    from workbench.config.store import Config
    from workbench.search.api import Search

# Catalog tables counted on the Overview page and in the repr, with their display names.
CATALOG_TABLES: dict[str, str] = {
    "entities": "dictamesh_entity_catalog",
    "relationships": "dictamesh_entity_relationships",
    "schemas": "dictamesh_schemas",
    "events": "dictamesh_event_log",
    "lineage_edges": "dictamesh_data_lineage",
    "cache_entries": "dictamesh_cache_status",
}


class Workbench:
    """One handle on a DictaMesh installation: its settings, stack, catalog and health."""

    def __init__(self, settings: Settings, endpoints: Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.stack = Stack(settings)

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.endpoints.postgres_url)

    @cached_property
    def producer(self) -> EventProducer:
        """Publishes CloudEvents; handles can wait for the catalog projection."""
        return EventProducer(
            self.endpoints.kafka_bootstrap, postgres_url=self.endpoints.postgres_url
        )

    @cached_property
    def catalog(self) -> Catalog:
        """Entities, relationships and history; writes go through the pipeline."""
        return Catalog(self.engine, self.producer)

    @cached_property
    def analytics(self) -> Analytics:
        """DuckDB over the DuckLake tables the analytics writer keeps fresh (read-only)."""
        from workbench.analytics.lake import default_data_path

        return Analytics(
            self.endpoints.postgres_url,
            default_data_path(self.settings),
            bootstrap=self.endpoints.kafka_bootstrap,
        )

    @cached_property
    def events(self) -> Events:
        """Publish, tail topics, and inspect or replay dead letters."""
        return Events(self.endpoints.kafka_bootstrap, self.producer)

    @cached_property
    def billing(self) -> Billing:
        """Plans, subscriptions, usage, invoices, payments, and MRR analytics of your own data."""
        from workbench.billing.service import Billing

        return Billing(self.engine, self.endpoints.kafka_bootstrap)

    @cached_property
    def schemas(self) -> SchemaRegistry:
        """Versioned JSON Schema and Avro subjects with compatibility checks.

        ``check`` of a breaking candidate lists, from lineage, the datasets downstream of the
        subject's dataset and the jobs reading them (``impacted_datasets``, ``impacted_jobs``).
        A subject names its dataset by ``metadata={"dataset": "namespace/name"}`` at
        registration (for ``topic-value`` subjects), else by being named ``namespace/name``.
        A subject with no version is an error unless checked with ``new_subject=True``.
        """
        return SchemaRegistry(self.engine)

    @cached_property
    def config(self) -> Config:
        """Hierarchical configuration with versions, rollback, encrypted secrets and watchers."""
        from workbench.config.secrets import provider_from_settings
        from workbench.config.store import Config

        return Config(
            self.engine,
            postgres_url=self.endpoints.postgres_url,
            keys=lambda: provider_from_settings(self.settings),
            redis_url=self.endpoints.redis_url,
            bootstrap=self.endpoints.kafka_bootstrap,
        )

    @cached_property
    def connectors(self) -> Connectors:
        """Connector instances: ``wb.connectors["NAME"].sync()``, runs, cursors, health."""
        from connectors.base.api import Connectors

        return Connectors(
            self.engine,
            lambda: self.producer,  # the current one: after close() a new one
            config_file=self.settings.home / "connectors.yaml",
            register_schema=lambda subject, schema: self.schemas.register(subject, dict(schema)),
            config_service=lambda key, environment: self.config.reveal(
                key, environment=environment
            ),
        )

    @cached_property
    def search(self) -> Search:
        """Semantic, keyword and hybrid search: ``wb.search("query", k=10)``; ``.context(...)``."""
        from workbench.search.api import Search

        return Search(self.engine, model=self.settings.embedding_model)

    def ensure_topics(self) -> list[str]:
        """Create the backbone's topics (and dead-letter topics) that do not exist yet."""
        return ensure_topics(self.endpoints.kafka_bootstrap)

    def health(self) -> list[HealthReport]:
        """A fresh health check of every component (also recorded as Prometheus gauges)."""
        reports = self.stack.health(self.endpoints, db.pool_status(self.engine))
        record_health(reports)
        return reports

    def lag(self) -> pl.DataFrame:
        """Per consumer group and partition: records not yet applied, and how stale that is."""
        from workbench.events.lag import consumer_lag, record_lag

        lags = consumer_lag(self.endpoints.kafka_bootstrap, self.endpoints.postgres_url)
        record_lag(lags)
        return pl.DataFrame(
            [lag.__dict__ for lag in lags],
            schema={
                "group": pl.String,
                "topic": pl.String,
                "partition": pl.Int64,
                "applied_offset": pl.Int64,
                "end_offset": pl.Int64,
                "lag_messages": pl.Int64,
                "lag_seconds": pl.Float64,
            },
        )

    def status(self) -> pl.DataFrame:
        """The health of each component as a table."""
        return pl.DataFrame(
            [
                {
                    "component": r.name,
                    "healthy": r.healthy,
                    "version": r.version,
                    "url": r.url,
                    "latency_ms": round(r.latency_ms, 1),
                    "error": r.error,
                }
                for r in self.health()
            ],
            schema={
                "component": pl.String,
                "healthy": pl.Boolean,
                "version": pl.String,
                "url": pl.String,
                "latency_ms": pl.Float64,
                "error": pl.String,
            },
        )

    def sql(self, query: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        """Run a read query on the catalog database; bind values through `params`."""
        with self.engine.connect() as connection:
            result = connection.execute(text(query), params or {})
            rows = [dict(row._mapping) for row in result]
            columns = list(result.keys())
        return pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)

    def counts(self) -> dict[str, int]:
        """Row counts of the catalog tables (estimates are not good enough for a dashboard)."""
        with self.engine.connect() as connection:
            existing = set(
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'dictamesh%'")
                ).scalars()
            )
            return {
                name: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608 - fixed names
                if table in existing
                else 0
                for name, table in CATALOG_TABLES.items()
            }

    def migrate(self, revision: str = "head") -> None:
        db.migrate_up(self.engine, revision)

    def close(self) -> None:
        """Deliver queued events and release every client opened so far; idempotent.

        Whatever is used afterwards opens again. Each client is closed even when another
        fails; a failure (events not delivered, say) is raised once all are closed.
        """
        opened = self.__dict__
        with ExitStack() as closing:
            if "engine" in opened:
                closing.callback(self.engine.dispose)  # stays usable: it reconnects on demand
            for name in ("analytics", "config", "producer"):
                if name in opened:
                    closing.callback(opened.pop(name).close)
            # Kept: its handles, which a caller may hold, reopen their adapters on use.
            if "connectors" in opened:
                closing.callback(self.connectors.close)
            # They hold the closed producer; made again, they get a new one.
            opened.pop("catalog", None)
            opened.pop("events", None)

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- representations: never raise, never show a secret --------------------------------
    def __repr__(self) -> str:
        try:
            return (
                f"Workbench(home={str(self.settings.home)!r}, "
                f"postgres={redact_url(self.endpoints.postgres_url)!r}, "
                f"kafka={self.endpoints.kafka_bootstrap!r}, "
                f"redis={redact_url(self.endpoints.redis_url)!r})"
            )
        except Exception:
            return "Workbench(<unavailable>)"

    def _repr_html_(self) -> str:
        try:
            rows = "".join(
                "<tr>"
                f"<td>{html.escape(r.name)}</td>"
                f"<td style='color:{'green' if r.healthy else 'crimson'}'>"
                f"{'healthy' if r.healthy else 'unhealthy'}</td>"
                f"<td>{html.escape(r.version or '')}</td>"
                f"<td><code>{html.escape(r.url)}</code></td>"
                f"<td>{r.latency_ms:.0f} ms</td>"
                f"<td>{html.escape(r.error or '')}</td>"
                "</tr>"
                for r in self.health()
            )
        except Exception as exc:
            return (
                f"<pre>{html.escape(repr(self))}\nhealth unavailable: {html.escape(str(exc))}</pre>"
            )
        return (
            "<div><strong>DictaMesh Workbench</strong> "
            f"<small>{html.escape(str(self.settings.home))}</small>"
            "<table><thead><tr><th>component</th><th>health</th><th>version</th><th>url</th>"
            f"<th>check</th><th>error</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )


def connect(
    settings: Settings | None = None, *, start: bool = True, migrate: bool = True
) -> Workbench:
    """A `Workbench` bound to the configured stack.

    With nothing configured, the embedded stack is started (idempotently) under
    ``DICTAMESH_HOME``; components given by URL are used as they are. With ``migrate`` the catalog
    schema is brought to the newest revision.
    """
    settings = settings or load_settings()
    endpoints = ensure_up(settings) if start else Stack(settings).endpoints()
    workbench = Workbench(settings, endpoints)
    if migrate:
        workbench.migrate()
        workbench.ensure_topics()
    return workbench
