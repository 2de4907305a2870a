"""`wb.connectors`: configured connector instances, their syncs, runs and health."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import Engine, text

from connectors.base.capabilities import Adapter, Capability, HealthStatus
from connectors.base.config import SecretSource, build_config, read_connectors_file
from connectors.base.registry import connector_class, connector_classes, ensure_name, installed
from connectors.base.sync import RegisterSchema, SyncEngine, SyncResult
from workbench.errors import DictaMeshError, UnknownNameError

if TYPE_CHECKING:
    from workbench.events.producer import EventProducer, PublishHandle

CONNECTORS_FILE = "connectors.yaml"

# Reads one key of the configuration service: (key, environment) -> plain value.
ConfigLookup = Callable[[str, str], Any]


class ConnectorHandle:
    """One configured instance: ``wb.connectors["support"].sync()``."""

    def __init__(self, owner: Connectors, instance: str, connector: str, values: dict[str, Any]):
        self.owner = owner
        self.instance = instance
        self.connector = connector
        self._values = values
        self._adapter: Adapter[Any] | None = None

    def __repr__(self) -> str:
        try:
            caps = ", ".join(sorted(c.value for c in connector_class(self.connector).capabilities))
        except Exception:
            caps = "?"
        return f"Connector({self.instance!r}, type={self.connector!r}, capabilities=[{caps}])"

    @property
    def adapter(self) -> Adapter[Any]:
        """The connector object, configured and initialized on first use."""
        if self._adapter is None:
            cls = connector_class(self.connector)
            values = dict(self._values)
            environment = values.pop("config_environment", None)
            config = build_config(
                cls.config_class,
                self.instance,
                values,
                secrets=self.owner.secret_source(str(environment) if environment else None),
            )
            adapter = cls(config, instance=self.instance)
            adapter.initialize()
            self._adapter = adapter
        return self._adapter

    @property
    def capabilities(self) -> list[str]:
        return sorted(c.value for c in connector_class(self.connector).capabilities)

    def sync(self, *, full: bool = False, progress: bool = True) -> SyncResult:
        """Sync every stream into the pipeline (incremental unless `full`); resumes a killed run."""
        return self.owner.engine_for(progress).sync(self.adapter, full=full)

    def health(self) -> HealthStatus:
        try:
            return self.adapter.health()
        except DictaMeshError as exc:
            return HealthStatus(False, str(exc))

    def receive_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[PublishHandle]:
        """Verify one webhook delivery and publish it (adapter event + entity changes)."""
        self.adapter.require(Capability.WEBHOOKS)
        delivery = self.adapter.receive(body, headers)  # type: ignore[attr-defined]
        return self.owner.engine_for(False).apply_webhook(self.adapter, delivery)

    def runs(self, limit: int = 20) -> pl.DataFrame:
        return self.owner.runs(self.instance, limit=limit)

    def state(self) -> pl.DataFrame:
        return self.owner.state(self.instance)

    def close(self) -> None:
        adapter, self._adapter = self._adapter, None  # reopened on next use, even if this fails
        if adapter is not None:
            adapter.shutdown()


class Connectors(Mapping[str, ConnectorHandle]):
    """Configured instances (``connectors.yaml`` plus `add`), and every installed type as an
    instance of the same name configured from the environment.

    `producer` gives the producer to publish with, asked at each sync or webhook: a Workbench
    closed and used again gives its new one, so handles kept across the close keep working.
    """

    def __init__(
        self,
        engine: Engine,
        producer: Callable[[], EventProducer],
        *,
        config_file: Path | None = None,
        register_schema: RegisterSchema | None = None,
        secrets: SecretSource | None = None,
        config_service: ConfigLookup | None = None,
    ) -> None:
        self.engine = engine
        self._producer = producer
        self.config_file = config_file
        self.register_schema = register_schema
        self.secrets = secrets
        self.config_service = config_service
        self._added: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, ConnectorHandle] = {}

    def __repr__(self) -> str:
        try:
            return f"Connectors({', '.join(self)})"
        except Exception:
            return "Connectors(<unavailable>)"

    def _declared(self) -> dict[str, dict[str, Any]]:
        declared = read_connectors_file(self.config_file) if self.config_file else {}
        declared.update(self._added)
        return declared

    def __getitem__(self, name: str) -> ConnectorHandle:
        if name in self._handles:
            return self._handles[name]
        declared = self._declared()
        if name in declared:
            values = dict(declared[name])
            kind = str(values.pop("connector", name))
        elif name in connector_classes():
            values, kind = {}, name
        else:
            raise UnknownNameError("connector", name, list(self))
        handle = ConnectorHandle(self, ensure_name(name), kind, values)
        self._handles[name] = handle
        return handle

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._declared(), *connector_classes()}))

    def __len__(self) -> int:
        return len(list(iter(self)))

    def add(self, name: str, *, connector: str, **values: Any) -> ConnectorHandle:
        """Configure an instance in this process (``connectors.yaml`` is the durable way)."""
        connector_class(connector)  # refuse unknown types now
        self._added[ensure_name(name)] = {"connector": connector, **values}
        old = self._handles.pop(name, None)
        if old is not None:
            old.close()
        return self[name]

    @property
    def producer(self) -> EventProducer:
        return self._producer()

    def close(self) -> None:
        """Shut down the adapters opened so far; using an instance again opens its adapter.

        Every adapter is shut down even when another's shutdown fails; the failure is raised
        afterwards.
        """
        with ExitStack() as closing:
            for handle in self._handles.values():
                closing.callback(handle.close)

    def secret_source(self, environment: str | None) -> SecretSource | None:
        """Where secret fields come from before the environment variables: `secrets` when given,
        else, for an instance naming a `config_environment`, the configuration service's key
        ``connectors.<instance>.<field>`` in that environment."""
        if self.secrets is not None:
            return self.secrets
        lookup = self.config_service
        if lookup is None or environment is None:
            return None

        def from_config(instance: str, field: str) -> str | None:
            try:
                found = lookup(f"connectors.{instance}.{field}", environment)
            except DictaMeshError:
                return None
            return None if found is None else str(found)

        return from_config

    def engine_for(self, progress: bool) -> SyncEngine:
        return SyncEngine(
            self.engine, self.producer, register_schema=self.register_schema, progress=progress
        )

    def installed(self) -> pl.DataFrame:
        """Installed connector types: name, version, capabilities."""
        return pl.DataFrame(
            [
                {
                    "name": i.name,
                    "version": i.version,
                    "capabilities": ", ".join(i.capabilities),
                    "description": i.description,
                }
                for i in installed()
            ],
            schema={
                "name": pl.String,
                "version": pl.String,
                "capabilities": pl.String,
                "description": pl.String,
            },
        )

    def runs(self, instance: str | None = None, *, limit: int = 20) -> pl.DataFrame:
        """The newest sync runs, of one instance or all."""
        query = (
            "SELECT id::text AS run_id, instance, connector, mode, status, attempts, "
            "records_read, records_published, records_deleted, error, error_kind, started_at, "
            "finished_at FROM dictamesh_connector_runs "
            "WHERE (CAST(:i AS text) IS NULL OR instance = :i) "
            "ORDER BY started_at DESC LIMIT :limit"
        )
        return _frame(self.engine, query, {"i": instance, "limit": limit})

    def state(self, instance: str) -> pl.DataFrame:
        """The committed cursor of each stream of `instance`."""
        query = (
            "SELECT stream, cursor::text AS cursor, full_cursor::text AS full_cursor, "
            "updated_at FROM dictamesh_connector_state WHERE instance = :i ORDER BY stream"
        )
        return _frame(self.engine, query, {"i": instance})

    def status(self, *, check_health: bool = False) -> pl.DataFrame:
        """One row per instance: type, capabilities, health, last run and its counts."""
        latest = _frame(
            self.engine,
            "SELECT DISTINCT ON (instance) instance, status, finished_at, records_read, "
            "records_published, error FROM dictamesh_connector_runs "
            "ORDER BY instance, started_at DESC",
            {},
        )
        newest = {row["instance"]: row for row in latest.iter_rows(named=True)}
        rows = []
        for name in self:
            handle = self[name]
            run = newest.get(name, {})
            health: str = "not checked"
            if check_health:
                status = handle.health()
                health = "healthy" if status.healthy else f"unhealthy: {status.detail}"
            rows.append(
                {
                    "instance": name,
                    "connector": handle.connector,
                    "capabilities": ", ".join(handle.capabilities),
                    "health": health,
                    "last_status": run.get("status"),
                    "last_finished": run.get("finished_at"),
                    "records_read": run.get("records_read"),
                    "records_published": run.get("records_published"),
                    "error": run.get("error"),
                }
            )
        return pl.DataFrame(
            rows,
            schema={
                "instance": pl.String,
                "connector": pl.String,
                "capabilities": pl.String,
                "health": pl.String,
                "last_status": pl.String,
                "last_finished": pl.Datetime(time_zone="UTC"),
                "records_read": pl.Int64,
                "records_published": pl.Int64,
                "error": pl.String,
            },
        )

    def _repr_html_(self) -> str:
        try:
            return "<strong>Connectors</strong>" + self.installed()._repr_html_()
        except Exception as exc:
            return f"<pre>Connectors: {html.escape(str(exc))}</pre>"


def _frame(engine: Engine, query: str, params: dict[str, Any]) -> pl.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(text(query), params)
        columns = list(result.keys())
        rows = [tuple(row) for row in result]
    return pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)
