"""SQLAlchemy 2 engine over psycopg 3, session helpers and the migration entry points.

Migrations are Alembic revisions in ``migrations/`` (installed as ``workbench.migrations``), driven
through Alembic's Python API. Every run holds a Postgres advisory lock, so two processes running
``migrate up`` at once apply each revision exactly once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from workbench.errors import MigrationError, UnknownNameError

VERSION_TABLE = "dictamesh_alembic_version"
# Any constant 64-bit key works; this one reads "DictaMesh migrations".
MIGRATION_LOCK_KEY = 0x44_69_63_74_61_4D_67_72


def sqlalchemy_url(url: str) -> str:
    """A libpq URL (postgresql://...) as SQLAlchemy's psycopg 3 dialect URL."""
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A pooled engine; connections are checked before use so a restarted server is survived."""
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
    options.update(kwargs)
    return create_engine(sqlalchemy_url(url), **options)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def pool_status(engine: Engine) -> dict[str, Any]:
    pool: Any = engine.pool
    stats: dict[str, Any] = {"status": pool.status()}
    for name in ("size", "checkedin", "checkedout", "overflow"):
        method = getattr(pool, name, None)
        if callable(method):
            stats[name] = method()
    return stats


# -- migrations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_current: bool
    is_head: bool


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("workbench.migrations")))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    config.attributes["version_table"] = VERSION_TABLE
    return config


@contextlib.contextmanager
def _migration_connection(engine: Engine) -> Iterator[Any]:
    """A connection holding the migration advisory lock for as long as it is open."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            yield connection
        finally:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


def _run(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    config = _alembic_config(engine)
    try:
        with _migration_connection(engine) as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    except CommandError as exc:
        known = [r.revision for r in migration_history(engine)]
        if "Can't locate revision" in str(exc) or "No such revision" in str(exc):
            raise UnknownNameError("revision", revision, [*known, "head", "base"]) from None
        raise MigrationError(
            f"migrate {action} {revision}: {exc}", remedy="see `dictamesh migrate history`."
        ) from exc


def migrate_up(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` (default: the newest)."""
    _run(engine, "upgrade", revision)


def migrate_down(engine: Engine, revision: str = "-1") -> None:
    """Revert migrations down to `revision` (``base`` reverts all; default: one step)."""
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def migration_history(engine: Engine) -> list[Revision]:
    """Every known revision, oldest first, marking the applied one and the head."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config(engine))
    heads = set(scripts.get_heads())
    try:
        current = current_revision(engine)
    except Exception:  # the database may be unreachable; history still lists the scripts
        current = None
    revisions = list(scripts.walk_revisions())
    revisions.reverse()
    return [
        Revision(
            revision=script.revision,
            down_revision=script.down_revision if isinstance(script.down_revision, str) else None,
            message=script.doc or "",
            is_current=script.revision == current,
            is_head=script.revision in heads,
        )
        for script in revisions
    ]
