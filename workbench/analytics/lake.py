"""DuckLake: the analytics tables, Parquet files with their catalog in the workbench's Postgres.

A plain DuckDB file admits one writing process and locks out every other; DuckLake keeps the
catalog (snapshots, files, statistics) in Postgres, so the analytics writer appends while the
dashboard server, notebooks and reports read, each from a consistent snapshot.

Extensions come from the ``duckdb-ext-*`` wheels only: autoinstall is off, nothing downloads.
The Postgres credentials live in a DuckDB secret, so they appear in no ATTACH string and no error
message; `duckdb_secrets()` shows them redacted.

Every writer batch is a DuckLake snapshot, and DuckLake deletes nothing by itself: `maintain`
merges small files, expires snapshots older than a `Retention` (7 days by default) and deletes
the files no remaining snapshot references once they have been unreferenced for a grace period
(1 day by default), so that disk use and catalog metadata stay bounded.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from workbench.errors import (
    ComponentUnavailableError,
    MissingDependencyError,
    SettingsError,
    TerminalError,
)
from workbench.observability import get_logger
from workbench.settings import Settings, load_settings, redact_url

if TYPE_CHECKING:
    import duckdb

log = get_logger(__name__)

ALIAS = "lake"
POSTGRES_ALIAS = "pg"
METADATA_SCHEMA = "dictamesh_lake"
SECRET = "dictamesh_postgres"  # noqa: S105 - the name of a DuckDB secret, not a password
# DuckDB's name of each extension file, and the wheel that ships it.
EXTENSION_PACKAGES = {
    "postgres_scanner": "duckdb-ext-postgres",
    "ducklake": "duckdb-ext-ducklake",
    "parquet": "duckdb-ext-parquet",
}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

EVENTS_TABLE = f"{ALIAS}.entity_events"
SNAPSHOTS_TABLE = f"{ALIAS}.entity_snapshots"
TABLES_DDL = (
    f"""
    CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
        event_id VARCHAR, event_source VARCHAR, event_type VARCHAR, time TIMESTAMPTZ,
        subject VARCHAR, domain VARCHAR, source_system VARCHAR, entity_type VARCHAR,
        source_id VARCHAR, entity_id VARCHAR, version BIGINT, attributes VARCHAR,
        topic VARCHAR, kafka_partition INTEGER, kafka_offset BIGINT,
        published_at TIMESTAMPTZ, landed_at TIMESTAMPTZ
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {SNAPSHOTS_TABLE} (
        entity_id VARCHAR, domain VARCHAR, source_system VARCHAR, entity_type VARCHAR,
        source_id VARCHAR, display_name VARCHAR, version BIGINT, attributes VARCHAR,
        owners VARCHAR[], tags VARCHAR[], is_deleted BOOLEAN, updated_at TIMESTAMPTZ,
        event_id VARCHAR, landed_at TIMESTAMPTZ
    )
    """,
)


class LakeError(TerminalError):
    """The DuckLake could not be opened or written."""


class LakeNotFoundError(LakeError):
    """No DuckLake exists yet in the metadata schema (a read-only attach cannot create one)."""


def import_duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise MissingDependencyError("Analytics", "analytics", module="duckdb") from None
    return duckdb


# -- where the lake is ------------------------------------------------------------------------
@dataclass(frozen=True)
class PostgresTarget:
    """The Postgres database holding the DuckLake catalog; the password never shows."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(default="", repr=False)

    @classmethod
    def from_url(cls, url: str) -> PostgresTarget:
        """Parse ``postgresql://user:pw@host:port/db`` (a ``?host=/socket/dir`` works too)."""
        plain = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", url.strip())
        try:
            params = conninfo_to_dict(plain)
        except psycopg.ProgrammingError:
            params = {}
        if not plain.startswith(("postgresql://", "postgres://")) or not params.get("dbname"):
            raise SettingsError(
                f"Not a PostgreSQL URL with a database: {redact_url(url)!r}.",
                remedy="pass postgresql://USER:PASSWORD@HOST:PORT/DBNAME.",
            )
        return cls(
            host=str(params.get("host") or "localhost"),
            port=int(params.get("port") or 5432),
            dbname=str(params["dbname"]),
            user=str(params.get("user") or "postgres"),
            password=str(params.get("password") or ""),
        )

    @classmethod
    def from_connection(cls, conn: psycopg.Connection[Any]) -> PostgresTarget:
        """The database an open psycopg connection talks to (the consumer runner's)."""
        info = conn.info
        return cls(info.host, info.port, info.dbname, info.user, info.password or "")

    def redacted(self) -> str:
        where = f"{self.host}:{self.port}" if not self.host.startswith("/") else self.host
        return f"postgresql://{self.user}:***@{where}/{self.dbname}"

    def scrub(self, text: str) -> str:
        """`text` without the password, for messages built from driver errors."""
        return text.replace(self.password, "***") if self.password else text


@dataclass(frozen=True)
class LakeConfig:
    """Which DuckLake: catalog database and schema, and where new Parquet files go."""

    postgres: PostgresTarget
    data_path: str
    metadata_schema: str = METADATA_SCHEMA

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.metadata_schema):
            raise SettingsError(
                f"The DuckLake metadata schema {self.metadata_schema!r} is not a plain "
                "lower-case identifier.",
                remedy="use letters, digits and underscores, e.g. 'dictamesh_lake'.",
            )

    @classmethod
    def create(
        cls,
        postgres: str | PostgresTarget,
        data_path: str | Path | None = None,
        metadata_schema: str = METADATA_SCHEMA,
    ) -> LakeConfig:
        target = (
            postgres if isinstance(postgres, PostgresTarget) else PostgresTarget.from_url(postgres)
        )
        path = _normalise_data_path(data_path if data_path is not None else default_data_path())
        return cls(target, path, metadata_schema)

    def __repr__(self) -> str:
        return (
            f"LakeConfig(postgres={self.postgres.redacted()!r}, data_path={self.data_path!r}, "
            f"metadata_schema={self.metadata_schema!r})"
        )


def default_data_path(settings: Settings | None = None) -> str:
    """``DICTAMESH_LAKE_DATA_PATH`` when the settings have it, else ``<home>/lake/``."""
    settings = settings if settings is not None else load_settings()
    configured = settings.lake_data_path
    return str(configured) if configured else str(settings.home / "lake")


def _normalise_data_path(path: str | Path) -> str:
    text = str(path)
    if "://" not in text:
        text = str(Path(text).expanduser().absolute())
    return text if text.endswith("/") else f"{text}/"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- extensions from the wheels -----------------------------------------------------------------
@lru_cache(maxsize=1)
def extension_directory() -> Path:
    """The ``duckdb_ext/extensions`` folder of the installed ``duckdb-ext-*`` wheels."""
    duckdb = import_duckdb()
    probe = duckdb.connect()
    try:
        version = probe.execute("SELECT library_version FROM pragma_version()").fetchone()[0]
        platform = probe.execute("SELECT platform FROM pragma_platform()").fetchone()[0]
    finally:
        probe.close()
    spec = importlib.util.find_spec("duckdb_ext")
    roots = (
        [Path(p) / "extensions" for p in (spec.submodule_search_locations or [])] if spec else []
    )
    found = {
        name: next(
            (
                root
                for root in roots
                if (root / version / platform / f"{name}.duckdb_extension").is_file()
            ),
            None,
        )
        for name in ("ducklake", "postgres_scanner")
    }
    for name, root in found.items():
        if root is None:
            raise _missing_extension(name, str(version))
    directory = found["ducklake"]
    assert directory is not None  # noqa: S101 - checked just above
    return directory


def _missing_extension(name: str, version: str) -> MissingDependencyError:
    package = EXTENSION_PACKAGES[name]
    error = MissingDependencyError(
        f"Analytics (DuckDB {version} extension {name!r})", "analytics", module=package
    )
    error.remedy = (
        f"pip install '{package}=={version.lstrip('v')}.*' (the wheel matching duckdb "
        f"{version}), or pip install 'dictamesh-workbench[analytics]'"
    )
    return error


def _load_extensions(con: Any, directory: Path) -> None:
    con.execute("SET extension_directory = ?", [str(directory)])
    con.execute("SET autoinstall_known_extensions = false")
    version = con.execute("SELECT library_version FROM pragma_version()").fetchone()[0]
    loaded = {
        row[0]
        for row in con.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded"
        ).fetchall()
    }
    for name in ("parquet", "postgres_scanner", "ducklake"):
        if name in loaded:  # parquet is built into most duckdb wheels
            continue
        try:
            con.execute(f"LOAD {name}")
        except import_duckdb().Error:
            raise _missing_extension(name, str(version)) from None


# -- connections --------------------------------------------------------------------------------
def open_lake(config: LakeConfig, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake attached as ``lake`` (and Postgres as ``pg``).

    Read-only connections need no data path (the catalog knows it) and never create anything:
    they raise `LakeNotFoundError` when the lake does not exist yet. The connection's
    configuration is locked once set up, so no query can turn extension downloads back on.
    """
    ddb = import_duckdb()
    directory = extension_directory()
    pg = config.postgres
    con: duckdb.DuckDBPyConnection = ddb.connect(":memory:")
    try:
        _load_extensions(con, directory)
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        con.execute(
            f"CREATE SECRET {SECRET} "
            "(TYPE postgres, HOST ?, PORT ?, DATABASE ?, USER ?, PASSWORD ?)",
            [pg.host, pg.port, pg.dbname, pg.user, pg.password],
        )
        options = [
            f"METADATA_SCHEMA {_literal(config.metadata_schema)}",
            f"METADATA_PARAMETERS MAP {{'SECRET': '{SECRET}'}}",
        ]
        if read_only:
            options.append("READ_ONLY")
        else:
            if "://" not in config.data_path:
                Path(config.data_path).mkdir(parents=True, exist_ok=True)
            options.append(f"DATA_PATH {_literal(config.data_path)}")
        _attach_lake(con, ddb, options, creating=not read_only)
        con.execute(f"ATTACH '' AS {POSTGRES_ALIAS} (TYPE postgres, SECRET {SECRET}, READ_ONLY)")
        con.execute("SET lock_configuration = true")
    except ddb.Error as exc:
        con.close()
        raise _lake_error(config, exc) from None
    except BaseException:
        con.close()
        raise
    log.debug(
        "lake attached",
        postgres=pg.redacted(),
        metadata_schema=config.metadata_schema,
        read_only=read_only,
    )
    return con


def _attach_lake(
    con: duckdb.DuckDBPyConnection, ddb: Any, options: list[str], *, creating: bool
) -> None:
    """ATTACH the lake; a writable attach may create it, and two processes creating one lake
    at once collide on Postgres' catalog (``CREATE SCHEMA IF NOT EXISTS`` is not atomic): the
    loser attaches again and finds the lake the winner made."""
    for attempt in range(3):
        try:
            con.execute(f"ATTACH 'ducklake:postgres:' AS {ALIAS} ({', '.join(options)})")
            return
        except ddb.Error as exc:
            collided = "duplicate key value" in str(exc) or "already exists" in str(exc)
            if not (creating and collided) or attempt == 2:
                raise
            log.debug("lake created concurrently, attaching again", attempt=attempt + 1)
            time.sleep(0.1 * (attempt + 1))  # back off: the winner may still be creating tables


def _lake_error(config: LakeConfig, exc: Exception) -> Exception:
    duckdb = import_duckdb()
    message = config.postgres.scrub(str(exc)).strip()
    where = f"{config.postgres.redacted()} schema {config.metadata_schema!r}"
    if "creating a new DuckLake is explicitly disabled" in message:
        return LakeNotFoundError(
            f"No DuckLake in {where} yet.",
            remedy="start the analytics writer (`dictamesh consume`) or open Analytics once "
            "with read_only=False to create it.",
        )
    if "does not match existing data path" in message:
        return LakeError(
            f"The DuckLake in {where} keeps its files elsewhere: {message}",
            remedy="use the data path the lake was created with "
            "(SELECT * FROM ducklake_options('lake')), or a new metadata schema.",
        )
    if isinstance(exc, duckdb.OperationalError):
        return ComponentUnavailableError(
            f"The DuckLake catalog in {where} did not answer: {message}",
            remedy="check Postgres with `dictamesh status`; start the stack with `dictamesh up`.",
        )
    return LakeError(f"Could not open the DuckLake in {where}: {message}")


_create_lock = threading.Lock()


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the lake tables if missing; safe when several processes race to do it."""
    duckdb = import_duckdb()
    with _create_lock:
        for attempt in range(5):
            try:
                for ddl in TABLES_DDL:
                    con.execute(ddl)
                return
            except duckdb.TransactionException:  # another process created them first
                if attempt == 4:
                    raise


def lake_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1", [ALIAS]
    ).fetchall()
    return [str(row[0]) for row in rows]


def initialise(config: LakeConfig) -> None:
    """Create the lake and its tables (a writable attach), then let go of it."""
    con = open_lake(config, read_only=False)
    try:
        ensure_tables(con)
    finally:
        con.close()


# -- maintenance ------------------------------------------------------------------------------
SNAPSHOT_RETENTION = timedelta(days=7)
FILE_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class Retention:
    """How much history `maintain` keeps.

    ``snapshots``: snapshots older than this are expired, so time travel (``AT (TIMESTAMP => t)``
    or ``AT (VERSION => n)``) works for any ``t`` within it and no further back. The snapshot that
    was current when the window opens is kept too, so the oldest instant still answers.

    ``file_grace``: a file no remaining snapshot references (merged away, or only read by expired
    snapshots) is deleted once it has been unreferenced this long. A reader's query or transaction
    that started before the file became unreferenced keeps reading it until then, so this must
    outlast the longest read transaction of the dashboards, notebooks and reports.
    """

    snapshots: timedelta = SNAPSHOT_RETENTION
    file_grace: timedelta = FILE_GRACE

    def __post_init__(self) -> None:
        for name in ("snapshots", "file_grace"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise SettingsError(
                    f"The lake retention's {name} must be a non-negative timedelta, not {value!r}.",
                    remedy=f"pass e.g. Retention({name}=timedelta(days=7)).",
                )


DEFAULT_RETENTION = Retention()


def configured_retention(settings: Settings | None = None) -> Retention:
    """The retention the settings ask for (``DICTAMESH_LAKE_SNAPSHOT_RETENTION_DAYS``)."""
    settings = settings if settings is not None else load_settings()
    return Retention(snapshots=timedelta(days=settings.lake_snapshot_retention_days))


# The snapshot current when the retention window opens: the newest one taken at or before it.
_WINDOW_START = f"""
SELECT max(snapshot_time) FROM ducklake_snapshots('{ALIAS}') WHERE snapshot_time <= ?
"""  # noqa: S608 - fixed identifiers only


@dataclass(frozen=True)
class MaintenanceResult:
    """What one `maintain` call removed."""

    expired_snapshots: int
    deleted_files: int


def maintain(
    con: duckdb.DuckDBPyConnection, retention: Retention = DEFAULT_RETENTION
) -> MaintenanceResult:
    """Merge small files, expire snapshots past the retention, delete unreferenced files.

    1. ``ducklake_merge_adjacent_files`` merges the small Parquet files that one commit per batch
       leaves. The merged file keeps each row's snapshot, so time travel is unaffected; the files
       it replaces are scheduled for deletion.
    2. ``ducklake_expire_snapshots`` removes the snapshots older than the newest snapshot taken at
       or before ``now - retention.snapshots`` (that one stays: it is the lake's state at the start
       of the window). DuckLake never expires the latest snapshot. Files only the expired
       snapshots read are scheduled for deletion.
    3. ``ducklake_cleanup_old_files`` deletes the files scheduled for deletion more than
       ``retention.file_grace`` ago (all of them when the grace is zero). Files are never
       deleted at the moment they become unreferenced: a reader in another process may still be
       scanning them.

    Orphans (files in the data path the catalog never recorded, e.g. from a crashed write) are
    left alone: two lakes may share a data path, and one lake's orphans are the other's data.
    """
    cutoff = datetime.now(UTC) - retention.snapshots
    con.execute(f"CALL ducklake_merge_adjacent_files('{ALIAS}')")
    anchor = con.execute(_WINDOW_START, [cutoff]).fetchone()
    expired = 0
    if anchor is not None and anchor[0] is not None:
        expired = len(
            con.execute(
                f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => ?)", [anchor[0]]
            ).fetchall()
        )
    if retention.file_grace > timedelta(0):
        deleted = con.execute(
            f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => ?)",
            [datetime.now(UTC) - retention.file_grace],
        ).fetchall()
    else:
        deleted = con.execute(
            f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)"
        ).fetchall()
    return MaintenanceResult(expired_snapshots=expired, deleted_files=len(deleted))
