"""The audit trail: every change and every secret read, with who, when, and from where."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, text

from workbench.config.model import Actor, Scope

AUDIT_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "at": pl.Datetime("us", "UTC"),
    "actor": pl.String,
    "actor_type": pl.String,
    "action": pl.String,
    "outcome": pl.String,
    "environment": pl.String,
    "service": pl.String,
    "component": pl.String,
    "key": pl.String,
    "version_id": pl.Int64,
    "request_id": pl.String,
    "address": pl.String,
    "user_agent": pl.String,
    "detail": pl.String,
}


def record(
    connection: Connection,
    actor: Actor,
    action: str,
    *,
    scope: Scope | None = None,
    key: str | None = None,
    version_id: int | None = None,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit row inside the caller's transaction (details never hold secret values)."""
    connection.execute(
        text(
            "INSERT INTO dictamesh_config_audit (actor, actor_type, action, outcome, environment, "
            "service, component, key, version_id, request_id, address, user_agent, detail) VALUES "
            "(:actor, :actor_type, :action, :outcome, :environment, :service, :component, :key, "
            ":version_id, :request_id, :address, :user_agent, CAST(:detail AS jsonb))"
        ),
        {
            "actor": actor.name,
            "actor_type": actor.type,
            "action": action,
            "outcome": outcome,
            "environment": scope.environment if scope else None,
            "service": scope.service if scope else None,
            "component": scope.component if scope else None,
            "key": key,
            "version_id": version_id,
            "request_id": actor.request_id,
            "address": actor.address,
            "user_agent": actor.user_agent,
            "detail": json.dumps(detail or {}, default=str),
        },
    )


def record_now(engine: Engine, actor: Actor, action: str, **kwargs: Any) -> None:
    """Append an audit row in its own transaction (for refusals that must be kept)."""
    with engine.begin() as connection:
        record(connection, actor, action, **kwargs)


def read(
    engine: Engine,
    *,
    key: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> pl.DataFrame:
    clauses, params = ["TRUE"], {"limit": limit}
    for name, value in (("key", key), ("actor", actor)):
        if value is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = value  # type: ignore[assignment]
    if action is not None:
        clauses.append("action LIKE :action")
        params["action"] = action.replace("*", "%")  # type: ignore[assignment]
    if since is not None:
        clauses.append("at >= :since")
        params["since"] = since  # type: ignore[assignment]
    query = (
        "SELECT id, at, actor, actor_type, action, outcome, environment, service, component, "  # noqa: S608
        "key, version_id, request_id, address, user_agent, detail::text AS detail "
        "FROM dictamesh_config_audit "
        f"WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT :limit"
    )
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(text(query), params)]
    return pl.DataFrame(rows, schema=AUDIT_SCHEMA, orient="row")
