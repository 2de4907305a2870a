"""`wb.config`: hierarchical configuration with versions, validation, secrets and approvals.

Values live at three levels of one environment: the environment itself, a service, a component of
a service; a read takes the most specific one. Every change is an immutable row in
``dictamesh_config_versions`` written in the same transaction as the current value, its audit row
and its change notice (``NOTIFY``), so history, audit and watchers never disagree with the data.
"""

from __future__ import annotations

import difflib
import fnmatch
import html
import json
import math
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import polars as pl
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError, best_match  # type: ignore[import-untyped]
from sqlalchemy import Connection, Engine, text

from workbench.config import audit
from workbench.config.model import (
    KEY_PATTERN,
    NAME_PATTERN,
    SYSTEM,
    Actor,
    ActorType,
    ConfigChange,
    ConfigError,
    ConfigVersion,
    ConflictError,
    Explanation,
    InvalidValueError,
    KeyInfo,
    Kind,
    Level,
    NotFoundError,
    PermissionDeniedError,
    Proposal,
    Scope,
)
from workbench.config.secrets import (
    MASK,
    MasterKeyProvider,
    Sealed,
    SecretError,
    SecretValue,
    open_sealed,
    rewrap,
    seal,
)
from workbench.config.watch import CHANNEL, Callback, ConfigCache, Watch, WatchHub, notify_payload
from workbench.errors import UnknownNameError
from workbench.observability import get_logger

log = get_logger(__name__)

CONFIG_TOPIC = "dictamesh.config.changed"
SOURCE = "dictamesh://workbench/config"
_MISSING: Any = object()
_FOR_UPDATE = {True: " FOR UPDATE", False: ""}
_DELETE: Any = object()
PERMISSIONS = ("secrets:read", "approve", "admin")

HISTORY_SCHEMA: dict[str, Any] = {
    "version": pl.Int64,
    "created_at": pl.Datetime("us", "UTC"),
    "environment": pl.String,
    "service": pl.String,
    "component": pl.String,
    "key": pl.String,
    "action": pl.String,
    "old_value": pl.String,
    "new_value": pl.String,
    "author": pl.String,
    "author_type": pl.String,
    "reason": pl.String,
    "rollback_of": pl.Int64,
    "diff": pl.String,
}


@dataclass
class _Shared:
    """State every actor view of one `Config` shares: engine, keys, cache and listener."""

    engine: Engine
    postgres_url: str
    keys: Callable[[], MasterKeyProvider]
    cache: ConfigCache
    hub: WatchHub
    bootstrap: str | None = None
    outbox: bool | None = None


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _shown(value: Any, *, secret: bool) -> str:
    if secret:
        return MASK
    return json.dumps(value, ensure_ascii=False, default=str)


def _check_json(key: str, value: Any, *, secret: bool) -> None:
    """Refuse values JSON cannot carry (NaN, sets, dates, objects with non-string keys...)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        shown = "(hidden)" if secret else repr(value)[:80]
        raise InvalidValueError(
            f"The value {shown} for key {key!r} is not JSON: {exc}.",
            key=key,
            rule="json",
            remedy="use strings, numbers, booleans, null, lists and objects with string keys; "
            "nothing was applied.",
        ) from None
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - caught above
        raise InvalidValueError(f"Key {key!r}: not a finite number.", key=key, remedy="fix it.")


def parse_json_value(key: str, raw: str, *, secret: bool = False) -> Any:
    """A value typed as JSON text (CLI, dashboard, import); the error names key and position."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        shown = "(hidden)" if secret else repr(raw[:80])
        raise InvalidValueError(
            f"The value {shown} for key {key!r} is not valid JSON: {exc.msg} at line "
            f"{exc.lineno} column {exc.colno}.",
            key=key,
            rule="json",
            remedy="quote text as a JSON string (e.g. '\"text\"'), or pass --string on the "
            "command line; nothing was applied.",
        ) from None


def validate_against(
    key: str, schema: dict[str, Any] | None, value: Any, scope: Scope | None, *, secret: bool
) -> None:
    """Raise `InvalidValueError` naming the key, the value and the rule that failed."""
    if schema is None:
        return
    error = best_match(Draft202012Validator(schema).iter_errors(value))
    if error is None:
        return
    rule_path = "/".join(str(p) for p in error.schema_path) or "(root)"
    where = "/".join(str(p) for p in error.absolute_path)
    at = f" at /{where}" if where else ""
    shown = "(hidden)" if secret else _shown(value, secret=False)[:200]
    detail = (
        f"rule {error.validator!r} = {json.dumps(error.validator_value, default=str)[:120]}"
        if secret
        else error.message
    )
    in_scope = f" in {scope}" if scope else ""
    raise InvalidValueError(
        f"The value {shown} for key {key!r}{in_scope} violates its JSON Schema{at}: {detail} "
        f"(failed rule: {error.validator!r} at schema path {rule_path}).",
        key=key,
        rule=str(error.validator),
        remedy="change the value to satisfy the schema, or change the key's schema with "
        "wb.config.define(...); nothing was applied.",
    )


class Config:
    """Hierarchical configuration: environment -> service -> component -> key.

    ``wb.config.set("db.pool_size", 20, environment="prod", service="api", reason="...")``,
    ``wb.config.get("db.pool_size", environment="prod", service="api")``,
    ``wb.config.explain(...)``, ``wb.config.history(...)``, ``wb.config.rollback(...)``.
    Actions are attributed to `actor` (default: the operating-system user); use `as_actor` for a
    view acting for someone else (a dashboard user, a service, an API key).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        postgres_url: str,
        keys: MasterKeyProvider | Callable[[], MasterKeyProvider],
        redis_url: str | None = None,
        bootstrap: str | None = None,
        actor: Actor | None = None,
        _shared: _Shared | None = None,
    ) -> None:
        if _shared is None:
            provider = keys if callable(keys) and not isinstance(keys, MasterKeyProvider) else None
            holder: list[MasterKeyProvider] = [] if provider else [keys]  # type: ignore[list-item]

            def key_provider() -> MasterKeyProvider:
                if not holder:
                    holder.append(provider())  # type: ignore[misc]
                return holder[0]

            cache = ConfigCache(redis_url)
            _shared = _Shared(
                engine,
                postgres_url,
                key_provider,
                cache,
                WatchHub(postgres_url, engine, cache),
                bootstrap,
            )
        self._shared = _shared
        self.engine = _shared.engine
        self.actor = actor or Actor.local()

    def __repr__(self) -> str:
        try:
            return f"Config(actor={self.actor.name!r}:{self.actor.type})"
        except Exception:
            return "Config(<unavailable>)"

    def _repr_html_(self) -> str:
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT e.name, e.requires_approval, count(v.key) FROM "
                        "dictamesh_config_environments e LEFT JOIN dictamesh_config_values v "
                        "ON v.environment = e.name GROUP BY e.name, e.requires_approval, "
                        "e.position ORDER BY e.position"
                    )
                ).all()
            body = "".join(
                f"<tr><td>{html.escape(r[0])}</td><td>{r[2]}</td>"
                f"<td>{'required' if r[1] else ''}</td></tr>"
                for r in rows
            )
            return (
                f"<div><strong>Configuration</strong> <small>acting as "
                f"{html.escape(self.actor.name)} ({self.actor.type})</small><table><tr>"
                f"<th>environment</th><th>values</th><th>approval</th></tr>{body}</table></div>"
            )
        except Exception as exc:
            return f"<pre>{html.escape(repr(self))}: {html.escape(type(exc).__name__)}</pre>"

    def as_actor(
        self,
        name: str | Actor,
        type: ActorType = "user",
        *,
        request_id: str | None = None,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> Config:
        """A view of the same configuration acting (and audited) as someone else."""
        actor = (
            name if isinstance(name, Actor) else Actor(name, type, request_id, address, user_agent)
        )
        return Config(
            self.engine, postgres_url="", keys=self._shared.keys, actor=actor, _shared=self._shared
        )

    def _keys(self) -> MasterKeyProvider:
        return self._shared.keys()

    @property
    def cache(self) -> ConfigCache:
        return self._shared.cache

    def close(self) -> None:
        self._shared.hub.stop()
        self._shared.cache.close()

    def view(
        self, environment: str, service: str | None = None, component: str | None = None
    ) -> ConfigView:
        """The configuration of one place, as a service instance reads it: cached, watched.

        ``cfg = wb.config.view("prod", "api")``; ``cfg["db.pool_size"]``;
        ``cfg.get("x", default=1)``; ``cfg.watch("db.*", callback)``.
        """
        with self.engine.connect() as connection:
            self._check_environment(connection, environment)
        return ConfigView(self, Scope(environment, service or "", component or ""))

    # -- environments ----------------------------------------------------------------------
    def environments(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    text("SELECT name FROM dictamesh_config_environments ORDER BY position, name")
                ).scalars()
            )

    def add_environment(
        self, name: str, *, description: str = "", requires_approval: bool = False
    ) -> None:
        if not NAME_PATTERN.match(name):
            raise ConfigError(
                f"The environment name {name!r} is not valid.",
                remedy="use letters, digits, '_', '-', '.' (at most 100 characters).",
            )
        with self.engine.begin() as connection:
            self._require(connection, "admin", "*", name)
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_environments (name, description, "
                    "requires_approval, position) VALUES (:name, :description, :approval, "
                    "(SELECT coalesce(max(position), 0) + 10 FROM dictamesh_config_environments)) "
                    "ON CONFLICT (name) DO UPDATE SET description = excluded.description, "
                    "requires_approval = excluded.requires_approval"
                ),
                {"name": name, "description": description, "approval": requires_approval},
            )
            audit.record(
                connection,
                self.actor,
                "environment.define",
                scope=Scope(name),
                detail={"requires_approval": requires_approval},
            )

    def require_approval(self, environment: str, required: bool = True) -> None:
        """Whether changes in `environment` must be proposed and approved before they apply."""
        with self.engine.begin() as connection:
            self._check_environment(connection, environment)
            self._require(connection, "admin", "*", environment)
            connection.execute(
                text(
                    "UPDATE dictamesh_config_environments SET requires_approval = :r "
                    "WHERE name = :name"
                ),
                {"r": required, "name": environment},
            )
            audit.record(
                connection,
                self.actor,
                "environment.approval",
                scope=Scope(environment),
                detail={"requires_approval": required},
            )

    def _check_environment(self, connection: Connection, environment: str) -> bool:
        """Whether `environment` requires approval; UnknownNameError when it does not exist."""
        row = connection.execute(
            text("SELECT requires_approval FROM dictamesh_config_environments WHERE name = :n"),
            {"n": environment},
        ).first()
        if row is None:
            known = connection.execute(
                text("SELECT name FROM dictamesh_config_environments")
            ).scalars()
            raise UnknownNameError("environment", environment, list(known))
        return bool(row[0])

    def _scope(
        self,
        connection: Connection,
        environment: str,
        service: str | None,
        component: str | None,
    ) -> tuple[Scope, bool]:
        scope = Scope(environment, service or "", component or "")
        return scope, self._check_environment(connection, environment)

    # -- keys ------------------------------------------------------------------------------
    def define(
        self,
        key: str,
        *,
        schema: dict[str, Any] | None = _MISSING,
        description: str | None = None,
        tags: Sequence[str] | None = None,
        owners: Sequence[str] | None = None,
        kind: Kind | None = None,
    ) -> KeyInfo:
        """Create or update a key's definition. A new schema must accept every existing value."""
        self._check_key(key)
        if schema is not _MISSING and schema is not None:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise InvalidValueError(
                    f"The JSON Schema given for key {key!r} is not a valid schema: {exc.message}.",
                    key=key,
                    rule="schema",
                    remedy="fix the schema (JSON Schema draft 2020-12); nothing was applied.",
                ) from None
        with self.engine.begin() as connection:
            current = self._key_info(connection, key, lock=True)
            new_kind = kind or (current.kind if current else "value")
            if current and kind and current.kind != kind:
                raise ConfigError(
                    f"Key {key!r} is a {current.kind}; it cannot become a {kind}.",
                    remedy="define a new key and move the values.",
                )
            new_schema = (current.schema if current else None) if schema is _MISSING else schema
            if new_kind == "flag" and new_schema is None:
                new_schema = {"type": "boolean"}
            if new_schema is not None and (schema is not _MISSING) and new_kind != "secret":
                rows = connection.execute(
                    text(
                        "SELECT environment, service, component, value FROM "
                        "dictamesh_config_values WHERE key = :key AND secret_id IS NULL"
                    ),
                    {"key": key},
                ).all()
                for env, svc, comp, value in rows:
                    validate_against(key, new_schema, value, Scope(env, svc, comp), secret=False)
            info = KeyInfo(
                key=key,
                kind=new_kind,
                description=description
                if description is not None
                else (current.description if current else ""),
                schema=new_schema,
                tags=list(tags) if tags is not None else (current.tags if current else []),
                owners=list(owners) if owners is not None else (current.owners if current else []),
            )
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_keys (key, description, schema, kind, tags, "
                    "owners) VALUES (:key, :description, CAST(:schema AS jsonb), :kind, :tags, "
                    ":owners) ON CONFLICT (key) DO UPDATE SET description = excluded.description, "
                    "schema = excluded.schema, kind = excluded.kind, tags = excluded.tags, "
                    "owners = excluded.owners, updated_at = now()"
                ),
                {
                    "key": key,
                    "description": info.description,
                    "schema": json.dumps(info.schema) if info.schema is not None else None,
                    "kind": info.kind,
                    "tags": info.tags,
                    "owners": info.owners,
                },
            )
            audit.record(
                connection,
                self.actor,
                "key.define",
                key=key,
                detail={
                    "kind": info.kind,
                    "schema": info.schema,
                    "tags": info.tags,
                    "owners": info.owners,
                },
            )
        return info

    def define_flag(
        self,
        name: str,
        *,
        description: str = "",
        owners: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> KeyInfo:
        """A feature flag: a key whose values are booleans, set per environment."""
        return self.define(
            name,
            kind="flag",
            schema={"type": "boolean"},
            description=description,
            owners=owners,
            tags=tags,
        )

    def key_info(self, key: str) -> KeyInfo | None:
        with self.engine.connect() as connection:
            return self._key_info(connection, key)

    @staticmethod
    def _key_info(connection: Connection, key: str, *, lock: bool = False) -> KeyInfo | None:
        row = connection.execute(
            text(
                "SELECT key, kind, description, schema, tags, owners FROM dictamesh_config_keys "  # noqa: S608
                "WHERE key = :key" + _FOR_UPDATE[lock]
            ),
            {"key": key},
        ).first()
        if row is None:
            return None
        return KeyInfo(row[0], row[1], row[2], row[3], list(row[4]), list(row[5]))

    @staticmethod
    def _check_key(key: str) -> None:
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise ConfigError(
                f"The key name {key!r} is not valid.",
                remedy="use letters, digits, '_', '-', '.', '/' (at most 200 characters), "
                "e.g. 'db.pool_size'.",
            )

    def keys(self, pattern: str = "*") -> pl.DataFrame:
        """Every defined key matching a glob pattern, with kind, tags, owners and schema."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT key, kind, description, tags, owners, schema::text AS schema "
                    "FROM dictamesh_config_keys ORDER BY key"
                )
            ).all()
        data = [
            {
                "key": r[0],
                "kind": r[1],
                "description": r[2],
                "tags": list(r[3]),
                "owners": list(r[4]),
                "schema": r[5],
            }
            for r in rows
            if fnmatch.fnmatchcase(r[0], pattern)
        ]
        return pl.DataFrame(
            data,
            schema={
                "key": pl.String,
                "kind": pl.String,
                "description": pl.String,
                "tags": pl.List(pl.String),
                "owners": pl.List(pl.String),
                "schema": pl.String,
            },
            orient="row",
        )

    # -- writes ----------------------------------------------------------------------------
    def set(
        self,
        key: str,
        value: Any,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        reason: str = "",
        secret: bool | None = None,
    ) -> ConfigVersion | Proposal:
        """Set a JSON value at the given level. Returns the new version, or a `Proposal` when
        the environment requires approval. Secret keys (``secret=True`` on first set) are
        encrypted; the value is validated against the key's schema first."""
        return self._change(
            key,
            value,
            environment,
            service,
            component,
            reason=reason,
            secret=secret,
            action="set",
        )

    def delete(
        self,
        key: str,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        reason: str = "",
    ) -> ConfigVersion | Proposal:
        """Remove the value at this level (a less specific level then applies)."""
        return self._change(
            key, _DELETE, environment, service, component, reason=reason, action="delete"
        )

    def set_flag(
        self,
        name: str,
        enabled: bool,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        reason: str = "",
    ) -> ConfigVersion | Proposal:
        info = self.key_info(name)
        if info is None:
            self.define_flag(name)
        elif info.kind != "flag":
            raise ConfigError(
                f"Key {name!r} is a {info.kind}, not a feature flag.",
                remedy="use wb.config.set for it, or define a flag with another name.",
            )
        return self.set(
            name,
            enabled,
            environment=environment,
            service=service,
            component=component,
            reason=reason,
        )

    def _change(
        self,
        key: str,
        value: Any,
        environment: str,
        service: str | None,
        component: str | None,
        *,
        reason: str,
        action: str,
        secret: bool | None = None,
        rollback_of: int | None = None,
        reuse_secret: uuid.UUID | None = None,
    ) -> ConfigVersion | Proposal:
        self._check_key(key)
        actor = self.actor.with_request()
        notices: list[ConfigChange] = []
        with self.engine.begin() as connection:
            scope, needs_approval = self._scope(connection, environment, service, component)
            info = self._prepare_key(connection, key, secret=secret, value=value)
            if value is not _DELETE and reuse_secret is None:
                _check_json(key, value, secret=info.is_secret)
                validate_against(key, info.schema, value, scope, secret=info.is_secret)
            result = self._propose_or_write(
                connection,
                actor,
                scope,
                key,
                info,
                value,
                needs_approval=needs_approval,
                reason=reason,
                action=action,
                notices=notices,
                rollback_of=rollback_of,
                reuse_secret=reuse_secret,
            )
        self._after_commit(notices)
        return result

    def _propose_or_write(
        self,
        connection: Connection,
        actor: Actor,
        scope: Scope,
        key: str,
        info: KeyInfo,
        value: Any,
        *,
        needs_approval: bool,
        reason: str,
        action: str,
        notices: list[ConfigChange],
        rollback_of: int | None = None,
        reuse_secret: uuid.UUID | None = None,
        change_set: uuid.UUID | None = None,
    ) -> ConfigVersion | Proposal:
        """A proposal where the environment requires approval, otherwise the change itself."""
        if needs_approval:
            return self._propose(
                connection, actor, scope, key, info, value, reason, rollback_of, reuse_secret
            )
        return self._write(
            connection,
            actor,
            scope,
            key,
            info,
            value,
            reason=reason,
            action=action,
            notices=notices,
            rollback_of=rollback_of,
            reuse_secret=reuse_secret,
            change_set=change_set,
        )

    def _prepare_key(
        self, connection: Connection, key: str, *, secret: bool | None, value: Any
    ) -> KeyInfo:
        info = self._key_info(connection, key)
        if info is None:
            if value is _DELETE:
                raise NotFoundError(
                    f"Key {key!r} is not defined.", remedy="see wb.config.keys() for the keys."
                )
            kind: Kind = "secret" if secret else "value"
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_keys (key, kind) VALUES (:key, :kind) "
                    "ON CONFLICT (key) DO NOTHING"
                ),
                {"key": key, "kind": kind},
            )
            info = self._key_info(connection, key)
            assert info is not None  # noqa: S101 - inserted just above
        elif secret is not None and secret != info.is_secret:
            raise ConfigError(
                f"Key {key!r} is {'a secret' if info.is_secret else 'not a secret'}; "
                f"secret={secret} does not match.",
                remedy="drop the secret= argument, or use a new key name.",
            )
        return info

    def _write(
        self,
        connection: Connection,
        actor: Actor,
        scope: Scope,
        key: str,
        info: KeyInfo,
        value: Any,
        *,
        reason: str,
        action: str,
        notices: list[ConfigChange],
        rollback_of: int | None = None,
        reuse_secret: uuid.UUID | None = None,
        proposal_id: int | None = None,
        change_set: uuid.UUID | None = None,
    ) -> ConfigVersion:
        """Apply one change inside the caller's transaction."""
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:lock))"),
            {"lock": f"dictamesh-config|{scope}|{key}"},
        )
        current = connection.execute(
            text(
                "SELECT value, secret_id, version_id FROM dictamesh_config_values WHERE "
                "environment = :e AND service = :s AND component = :c AND key = :k"
            ),
            {"e": scope.environment, "s": scope.service, "c": scope.component, "k": key},
        ).first()
        deleting = value is _DELETE
        if deleting and current is None:
            raise NotFoundError(
                f"Key {key!r} has no value in {scope} to delete.",
                remedy="check the level (service=, component=) with wb.config.explain(...).",
            )
        if (
            current is not None
            and not deleting
            and not info.is_secret
            and current[0] == value
            and reuse_secret is None
        ):
            return self._version(connection, int(current[2]))  # unchanged: no new version
        old_value = None if current is None or info.is_secret else current[0]
        old_secret = current[1] if current is not None else None
        new_secret: uuid.UUID | None = None
        stored_value: Any = None
        if not deleting:
            if info.is_secret:
                new_secret = reuse_secret or self._seal(connection, key, value)
            else:
                stored_value = value
        diff = self._diff_text(
            key,
            scope,
            old_value,
            None if deleting else stored_value,
            secret=info.is_secret,
            deleting=deleting,
            existed=current is not None,
        )
        version_id = int(
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_versions (environment, service, component, "
                    "key, action, old_value, new_value, old_secret_id, new_secret_id, is_deleted, "
                    "diff, author, author_type, reason, request_id, rollback_of, proposal_id, "
                    "change_set) VALUES (:e, :s, :c, :k, :action, CAST(:old AS jsonb), "
                    "CAST(:new AS jsonb), :old_secret, :new_secret, :deleted, :diff, :author, "
                    ":author_type, :reason, :request_id, :rollback_of, :proposal_id, :change_set) "
                    "RETURNING id"
                ),
                {
                    "e": scope.environment,
                    "s": scope.service,
                    "c": scope.component,
                    "k": key,
                    "action": action,
                    "old": json.dumps(old_value)
                    if current is not None and not info.is_secret
                    else None,
                    "new": json.dumps(stored_value)
                    if not deleting and not info.is_secret
                    else None,
                    "old_secret": old_secret,
                    "new_secret": new_secret,
                    "deleted": deleting,
                    "diff": diff,
                    "author": actor.name,
                    "author_type": actor.type,
                    "reason": reason,
                    "request_id": actor.request_id,
                    "rollback_of": rollback_of,
                    "proposal_id": proposal_id,
                    "change_set": change_set,
                },
            ).scalar_one()
        )
        params = {"e": scope.environment, "s": scope.service, "c": scope.component, "k": key}
        if deleting:
            connection.execute(
                text(
                    "DELETE FROM dictamesh_config_values WHERE environment = :e AND "
                    "service = :s AND component = :c AND key = :k"
                ),
                params,
            )
        else:
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_values (environment, service, component, key, "
                    "value, secret_id, version_id, updated_by) VALUES (:e, :s, :c, :k, "
                    "CAST(:value AS jsonb), :secret, :version, :author) ON CONFLICT "
                    "(environment, service, component, key) DO UPDATE SET value = excluded.value, "
                    "secret_id = excluded.secret_id, version_id = excluded.version_id, "
                    "updated_by = excluded.updated_by, updated_at = now()"
                ),
                {
                    **params,
                    "value": None if info.is_secret else json.dumps(stored_value),
                    "secret": new_secret,
                    "version": version_id,
                    "author": actor.name,
                },
            )
        audit.record(
            connection,
            actor,
            action,
            scope=scope,
            key=key,
            version_id=version_id,
            detail={"reason": reason, "rollback_of": rollback_of, "proposal_id": proposal_id},
        )
        payload = notify_payload(
            version_id,
            scope,
            key,
            action,
            is_secret=info.is_secret,
            value=None if deleting else stored_value,
        )
        connection.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )
        self._announce(
            connection,
            version_id,
            scope,
            key,
            action,
            actor,
            reason,
            info.is_secret,
            None if deleting else stored_value,
        )
        notices.append(ConfigChange(version_id, scope, key, action, info.is_secret))
        return self._version(connection, version_id)

    def _outbox_ready(self, connection: Connection) -> bool:
        """Whether the transactional outbox exists (checked once); its topic is created then."""
        shared = self._shared
        if shared.outbox is None:
            shared.outbox = bool(
                connection.execute(
                    text("SELECT to_regclass('dictamesh_outbox') IS NOT NULL")
                ).scalar()
            )
            if shared.outbox and shared.bootstrap:
                from workbench.events.topics import TopicSpec, dead_letter_topic, ensure_topics

                try:
                    ensure_topics(
                        shared.bootstrap,
                        [TopicSpec(CONFIG_TOPIC), TopicSpec(dead_letter_topic(CONFIG_TOPIC), 1)],
                    )
                except Exception as exc:  # the relay retries; the change itself is committed
                    log.warning("config topic not created", topic=CONFIG_TOPIC, error=str(exc))
        return shared.outbox

    def _announce(
        self,
        connection: Connection,
        version_id: int,
        scope: Scope,
        key: str,
        action: str,
        actor: Actor,
        reason: str,
        is_secret: bool,
        value: Any,
    ) -> None:
        """A `dictamesh.config.changed` CloudEvent in the outbox, in the change's transaction."""
        if not self._outbox_ready(connection):
            return
        from workbench.events.envelope import CloudEvent
        from workbench.events.outbox import enqueue

        data: dict[str, Any] = {
            "version": version_id,
            "environment": scope.environment,
            "service": scope.service,
            "component": scope.component,
            "key": key,
            "action": action,
            "author": actor.name,
            "author_type": actor.type,
            "reason": reason,
            "is_secret": is_secret,
        }
        if not is_secret:
            data["value"] = value
        enqueue(
            connection,
            CONFIG_TOPIC,
            CloudEvent(
                source=SOURCE,
                type=CONFIG_TOPIC,
                subject=f"{scope}:{key}",
                partitionkey=key,
                correlationid=actor.request_id,
                data=data,
            ),
        )

    def _after_commit(self, notices: Iterable[ConfigChange]) -> None:
        for change in notices:
            self.cache.invalidate(change.scope.environment, change.key)

    def _seal(self, connection: Connection, key: str, value: Any) -> uuid.UUID:
        secret_id = uuid.uuid4()
        sealed = seal(self._keys(), str(secret_id), key, json.dumps(value).encode())
        connection.execute(
            text(
                "INSERT INTO dictamesh_config_secrets (id, key, nonce, ciphertext, key_nonce, "
                "wrapped_key, master_key_id) VALUES (:id, :key, :nonce, :ciphertext, :key_nonce, "
                ":wrapped_key, :master_key_id)"
            ),
            {
                "id": secret_id,
                "key": key,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "key_nonce": sealed.key_nonce,
                "wrapped_key": sealed.wrapped_key,
                "master_key_id": sealed.master_key_id,
            },
        )
        return secret_id

    @staticmethod
    def _diff_text(
        key: str, scope: Scope, old: Any, new: Any, *, secret: bool, deleting: bool, existed: bool
    ) -> str:
        label = f"{scope}:{key}"
        if secret:
            if deleting:
                return f"{label}: secret removed"
            return f"{label}: secret {'changed' if existed else 'set'} (values not shown)"
        before = _dump(old).splitlines() if existed else []
        after = [] if deleting else _dump(new).splitlines()
        return "\n".join(
            difflib.unified_diff(before, after, f"a/{label}", f"b/{label}", lineterm="")
        )

    @staticmethod
    def _version_from_row(row: Any) -> ConfigVersion:
        return ConfigVersion(
            id=int(row.id),
            scope=Scope(row.environment, row.service, row.component),
            key=row.key,
            action=row.action,
            old_value=row.old_value,
            new_value=row.new_value,
            is_deleted=bool(row.is_deleted),
            diff=row.diff,
            author=row.author,
            author_type=row.author_type,
            reason=row.reason,
            created_at=row.created_at,
            request_id=row.request_id,
            rollback_of=row.rollback_of,
            is_secret=row.new_secret_id is not None or row.old_secret_id is not None,
        )

    def _version(self, connection: Connection, version_id: int) -> ConfigVersion:
        row = connection.execute(
            text("SELECT * FROM dictamesh_config_versions WHERE id = :id"), {"id": version_id}
        ).first()
        if row is None:
            raise NotFoundError(
                f"Version #{version_id} does not exist.",
                remedy="see wb.config.history(...) for the versions.",
            )
        return self._version_from_row(row)

    def version(self, version_id: int) -> ConfigVersion:
        with self.engine.connect() as connection:
            return self._version(connection, version_id)

    # -- reads -----------------------------------------------------------------------------
    def _levels(
        self, connection: Connection, scope: Scope, key: str, as_of: datetime | None
    ) -> list[Level]:
        chain = scope.chain()
        services = list({s.service for s in chain})
        components = list({s.component for s in chain})
        params = {"e": scope.environment, "k": key, "s": services, "c": components}
        if as_of is None:
            rows = connection.execute(
                text(
                    "SELECT service, component, value, secret_id, version_id, updated_by, "
                    "updated_at FROM dictamesh_config_values WHERE environment = :e AND key = :k "
                    "AND service = ANY(:s) AND component = ANY(:c)"
                ),
                params,
            ).all()
            found = {(r[0], r[1]): r for r in rows}
        else:
            rows = connection.execute(
                text(
                    "SELECT DISTINCT ON (service, component) service, component, new_value, "
                    "new_secret_id, id, author, created_at, is_deleted FROM "
                    "dictamesh_config_versions WHERE environment = :e AND key = :k AND "
                    "service = ANY(:s) AND component = ANY(:c) AND created_at <= :t "
                    "ORDER BY service, component, id DESC"
                ),
                {**params, "t": as_of},
            ).all()
            found = {(r[0], r[1]): r for r in rows if not r[7]}
        levels = []
        for level_scope in chain:
            row = found.get((level_scope.service, level_scope.component))
            if row is None:
                levels.append(Level(level_scope, level_scope.level, False))
            else:
                value = {"secret_id": row[3]} if row[3] is not None else row[2]
                levels.append(
                    Level(level_scope, level_scope.level, True, value, int(row[4]), row[5], row[6])
                )
        return levels

    def _resolve(
        self, connection: Connection, scope: Scope, key: str, as_of: datetime | None
    ) -> tuple[bool, Any, Level | None]:
        for level in self._levels(connection, scope, key, as_of):
            if level.found:
                return True, level.value, level
        return False, None, None

    def get(
        self,
        key: str,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        default: Any = _MISSING,
        as_of: datetime | None = None,
        cached: bool = False,
    ) -> Any:
        """The value the most specific level supplies (a `SecretValue` for a secret, after a
        permission check, audited). `cached` serves from memory/Redis, invalidated on change;
        `as_of` reads the configuration as it was at that time."""
        if cached and as_of is None:
            scope = Scope(environment, service or "", component or "")
            self._shared.hub.start()
            found, value = self.cache.get(scope, key, lambda: self._load(scope, key))
            if found and isinstance(value, dict) and value.get("__secret__"):
                return self.get(
                    key,
                    environment=environment,
                    service=service,
                    component=component,
                    default=default,
                )
            return self._found_or_default(found, value, key, scope, default)
        with self.engine.connect() as connection:
            scope, _ = self._scope(connection, environment, service, component)
            info = self._key_info(connection, key)
            found, value, level = self._resolve(connection, scope, key, as_of)
        if info is not None and info.is_secret and found and level is not None:
            return SecretValue(self._decrypt(scope, key, level, as_of=as_of))
        if not found and info is not None and info.schema and "default" in info.schema:
            return info.schema["default"]
        return self._found_or_default(found, value, key, scope, default)

    def _load(self, scope: Scope, key: str) -> tuple[bool, Any]:
        with self.engine.connect() as connection:
            self._check_environment(connection, scope.environment)
            info = self._key_info(connection, key)
            found, value, _ = self._resolve(connection, scope, key, None)
        if info is not None and info.is_secret:
            return found, {"__secret__": True} if found else None
        if not found and info is not None and info.schema and "default" in info.schema:
            return True, info.schema["default"]
        return found, value

    @staticmethod
    def _found_or_default(found: bool, value: Any, key: str, scope: Scope, default: Any) -> Any:
        if found:
            return value
        if default is not _MISSING:
            return default
        raise NotFoundError(
            f"Key {key!r} has no value in {scope} (nor at a less specific level).",
            remedy=f"set it with wb.config.set({key!r}, VALUE, environment="
            f"{scope.environment!r}, ...), or pass default=...",
        )

    def reveal(
        self,
        key: str,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        as_of: datetime | None = None,
    ) -> Any:
        """A secret's plain value (permission checked, audited)."""
        value = self.get(
            key, environment=environment, service=service, component=component, as_of=as_of
        )
        return value.reveal() if isinstance(value, SecretValue) else value

    def _decrypt(self, scope: Scope, key: str, level: Level, *, as_of: datetime | None) -> Any:
        actor = self.actor.with_request()
        with self.engine.connect() as connection:
            allowed = self._allowed(connection, actor, "secrets:read", key, scope.environment)
        if not allowed:
            audit.record_now(
                self.engine,
                actor,
                "secret.read",
                scope=scope,
                key=key,
                outcome="denied",
                version_id=level.version_id,
            )
            raise PermissionDeniedError(
                f"{actor.type} {actor.name!r} may not read secret {key!r} in "
                f"{scope.environment!r}; nothing was revealed (the refusal is audited).",
                remedy="ask an administrator for wb.config.grant(PRINCIPAL, 'secrets:read', "
                f"keys={key!r}, environments={scope.environment!r}).",
            )
        secret_id = level.value["secret_id"]
        with self.engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT id, nonce, ciphertext, key_nonce, wrapped_key, master_key_id FROM "
                    "dictamesh_config_secrets WHERE id = :id"
                ),
                {"id": secret_id},
            ).one()
        sealed = Sealed(
            str(row[0]), bytes(row[1]), bytes(row[2]), bytes(row[3]), bytes(row[4]), row[5]
        )
        try:
            plain = open_sealed(self._keys(), sealed, key)
        except ConfigError:
            raise
        except Exception as exc:
            audit.record_now(
                self.engine,
                actor,
                "secret.read",
                scope=scope,
                key=key,
                outcome="error",
                version_id=level.version_id,
                detail={"error": type(exc).__name__},
            )
            raise
        audit.record_now(
            self.engine,
            actor,
            "secret.read",
            scope=scope,
            key=key,
            version_id=level.version_id,
            detail={"as_of": as_of},
        )
        return json.loads(plain)

    def explain(
        self,
        key: str,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        as_of: datetime | None = None,
    ) -> Explanation:
        """Which level supplies the value and which levels it overrides (secrets masked)."""
        with self.engine.connect() as connection:
            scope, _ = self._scope(connection, environment, service, component)
            info = self._key_info(connection, key)
            levels = self._levels(connection, scope, key, as_of)
        secret = bool(info and info.is_secret)
        if secret:
            levels = [replace(level, value=MASK if level.found else None) for level in levels]
        schema = info.schema if info else None
        has_default = bool(schema and "default" in schema)
        return Explanation(
            key,
            scope,
            levels,
            secret,
            schema["default"] if schema and has_default else None,
            has_default,
        )

    def snapshot(
        self,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        *,
        as_of: datetime | None = None,
    ) -> dict[str, Any]:
        """Every key's effective value here (secrets masked), now or at `as_of`."""
        with self.engine.connect() as connection:
            scope, _ = self._scope(connection, environment, service, component)
            return self._snapshot(connection, scope, as_of)

    def _snapshot(
        self, connection: Connection, scope: Scope, as_of: datetime | None
    ) -> dict[str, Any]:
        chain = scope.chain()
        params = {
            "e": scope.environment,
            "s": list({s.service for s in chain}),
            "c": list({s.component for s in chain}),
        }
        if as_of is None:
            rows = connection.execute(
                text(
                    "SELECT key, service, component, value, secret_id IS NOT NULL FROM "
                    "dictamesh_config_values WHERE environment = :e AND service = ANY(:s) AND "
                    "component = ANY(:c)"
                ),
                params,
            ).all()
        else:
            rows = connection.execute(
                text(
                    "SELECT key, service, component, new_value, new_secret_id IS NOT NULL FROM "
                    "(SELECT DISTINCT ON (key, service, component) key, service, component, "
                    "new_value, new_secret_id, is_deleted FROM dictamesh_config_versions WHERE "
                    "environment = :e AND service = ANY(:s) AND component = ANY(:c) AND "
                    "created_at <= :t ORDER BY key, service, component, id DESC) latest "
                    "WHERE NOT is_deleted"
                ),
                {**params, "t": as_of},
            ).all()
        rank = {(s.service, s.component): i for i, s in enumerate(chain)}
        best: dict[str, tuple[int, Any]] = {}
        for key, service, component, value, is_secret in rows:
            position = rank.get((service, component))
            if position is None:
                continue
            if key not in best or position < best[key][0]:
                best[key] = (position, MASK if is_secret else value)
        return {key: best[key][1] for key in sorted(best)}

    def diff(
        self,
        environment: str,
        other: str,
        *,
        service: str | None = None,
        component: str | None = None,
        other_service: str | None = _MISSING,
        other_component: str | None = _MISSING,
    ) -> pl.DataFrame:
        """Effective values of two places side by side: added, removed, changed, same."""
        left = self.snapshot(environment, service, component)
        right = self.snapshot(
            other,
            service if other_service is _MISSING else other_service,
            component if other_component is _MISSING else other_component,
        )
        rows = []
        for key in sorted(set(left) | set(right)):
            if key not in right:
                status = "only_left"
            elif key not in left:
                status = "only_right"
            else:
                status = "same" if left[key] == right[key] else "changed"
            rows.append(
                {
                    "key": key,
                    "status": status,
                    environment if environment != other else "left": json.dumps(left[key])
                    if key in left
                    else None,
                    other if environment != other else "right": json.dumps(right[key])
                    if key in right
                    else None,
                }
            )
        columns = [environment, other] if environment != other else ["left", "right"]
        return pl.DataFrame(
            rows,
            schema={
                "key": pl.String,
                "status": pl.String,
                columns[0]: pl.String,
                columns[1]: pl.String,
            },
            orient="row",
        )

    def history(
        self,
        key: str | None = None,
        *,
        environment: str | None = None,
        service: str | None = None,
        component: str | None = None,
        limit: int = 100,
    ) -> pl.DataFrame:
        """Versions newest first, for a key, a service, an environment or everything."""
        clauses, params = ["TRUE"], {"limit": limit}
        for name, value in (
            ("key", key),
            ("environment", environment),
            ("service", service),
            ("component", component),
        ):
            if value is not None:
                clauses.append(f"{name} = :{name}")
                params[name] = value  # type: ignore[assignment]
        with self.engine.connect() as connection:
            if environment is not None:
                self._check_environment(connection, environment)
            rows = connection.execute(
                text(
                    "SELECT id AS version, created_at, environment, service, component, key, "  # noqa: S608
                    "action, CASE WHEN old_secret_id IS NOT NULL "
                    "THEN to_jsonb(CAST(:mask AS text)) ELSE old_value END::text AS old_value, "
                    "CASE WHEN new_secret_id IS NOT NULL "
                    "THEN to_jsonb(CAST(:mask AS text)) ELSE new_value END::text AS new_value, "
                    "author, author_type, reason, rollback_of, diff FROM dictamesh_config_versions "
                    f"WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT :limit"
                ),
                {**params, "mask": MASK},
            ).all()
        return pl.DataFrame([dict(r._mapping) for r in rows], schema=HISTORY_SCHEMA, orient="row")

    # -- rollback --------------------------------------------------------------------------
    def rollback(
        self,
        key: str,
        *,
        to_version: int | None = None,
        as_of: datetime | None = None,
        environment: str | None = None,
        service: str | None = None,
        component: str | None = None,
        reason: str = "",
    ) -> ConfigVersion | Proposal:
        """Restore the value a key had after version `to_version` (whose scope it takes) or at
        time `as_of` (in the given scope). The restore is itself a new version."""
        if (to_version is None) == (as_of is None):
            raise ConfigError(
                "Pass exactly one of to_version= or as_of=.",
                remedy="e.g. rollback('db.pool_size', to_version=12).",
            )
        with self.engine.connect() as connection:
            if to_version is not None:
                target = self._version(connection, to_version)
                if target.key != key:
                    raise ConflictError(
                        f"Version #{to_version} belongs to key {target.key!r}, not {key!r}.",
                        remedy=f"see wb.config.history({key!r}) for its versions.",
                    )
                scope = target.scope
                row = connection.execute(
                    text(
                        "SELECT new_value, new_secret_id, is_deleted FROM "
                        "dictamesh_config_versions WHERE id = :id"
                    ),
                    {"id": to_version},
                ).one()
                new_value, secret_id, deleted = row
                source = to_version
            else:
                if environment is None:
                    raise ConfigError(
                        "rollback(as_of=...) needs environment=.",
                        remedy="pass environment=, and service=/component= as set.",
                    )
                scope, _ = self._scope(connection, environment, service, component)
                found = connection.execute(
                    text(
                        "SELECT id, new_value, new_secret_id, is_deleted FROM "
                        "dictamesh_config_versions WHERE environment = :e AND service = :s AND "
                        "component = :c AND key = :k AND created_at <= :t ORDER BY id DESC LIMIT 1"
                    ),
                    {
                        "e": scope.environment,
                        "s": scope.service,
                        "c": scope.component,
                        "k": key,
                        "t": as_of,
                    },
                ).first()
                if found is None:
                    source, new_value, secret_id, deleted = None, None, None, True
                else:
                    source = int(found[0])
                    new_value, secret_id, deleted = found[1], found[2], found[3]
        reason = reason or (f"rollback to version #{source}" if source else "rollback")
        value = _DELETE if deleted else new_value
        return self._change(
            key,
            value,
            scope.environment,
            scope.service,
            scope.component,
            reason=reason,
            action="rollback" if not deleted else "delete",
            rollback_of=source,
            reuse_secret=secret_id,
        )

    def rollback_scope(
        self,
        *,
        environment: str,
        as_of: datetime,
        service: str | None = None,
        component: str | None = None,
        reason: str = "",
    ) -> list[ConfigVersion]:
        """Restore every key set at exactly this level (an environment, a service or a
        component) to its value at `as_of`, in one transaction: keys added since are removed.
        Each restored key gets a new version; the whole restore shares one change set."""
        actor = self.actor.with_request()
        change_set = uuid.uuid4()
        notices: list[ConfigChange] = []
        results: list[ConfigVersion] = []
        with self.engine.begin() as connection:
            scope, needs_approval = self._scope(connection, environment, service, component)
            if needs_approval:
                raise ConfigError(
                    f"{environment!r} requires approval; a whole-scope rollback cannot be "
                    "proposed as one change.",
                    remedy="roll keys back one by one (each becomes a proposal), or lift the "
                    "requirement for the incident with require_approval(env, False).",
                )
            params = {"e": scope.environment, "s": scope.service, "c": scope.component}
            then = {
                row[0]: row
                for row in connection.execute(
                    text(
                        "SELECT DISTINCT ON (key) key, id, new_value, new_secret_id, is_deleted "
                        "FROM dictamesh_config_versions WHERE environment = :e AND service = :s "
                        "AND component = :c AND created_at <= :t ORDER BY key, id DESC"
                    ),
                    {**params, "t": as_of},
                ).all()
                if not row[4]
            }
            now = {
                row[0]: row
                for row in connection.execute(
                    text(
                        "SELECT key, value, secret_id FROM dictamesh_config_values WHERE "
                        "environment = :e AND service = :s AND component = :c"
                    ),
                    params,
                ).all()
            }
            for key in sorted(set(then) | set(now)):
                info = self._key_info(connection, key)
                assert info is not None  # noqa: S101 - values exist only for defined keys
                old = then.get(key)
                current = now.get(key)
                if old is None:
                    value: Any = _DELETE
                elif info.is_secret:
                    if current is not None and current[2] == old[3]:
                        continue
                    value = None
                else:
                    if current is not None and current[1] == old[2]:
                        continue
                    value = old[2]
                version = self._write(
                    connection,
                    actor,
                    scope,
                    key,
                    info,
                    value,
                    reason=reason or f"rollback of {scope} to {as_of.isoformat()}",
                    action="delete" if old is None else "rollback",
                    notices=notices,
                    rollback_of=int(old[1]) if old is not None else None,
                    reuse_secret=old[3] if old is not None and info.is_secret else None,
                    change_set=change_set,
                )
                results.append(version)
        self._after_commit(notices)
        return results

    # -- flags -----------------------------------------------------------------------------
    def flag(
        self,
        name: str,
        *,
        environment: str,
        service: str | None = None,
        component: str | None = None,
        cached: bool = True,
    ) -> bool:
        """A feature flag's value here (False when unset)."""
        value = self.get(
            name,
            environment=environment,
            service=service,
            component=component,
            default=False,
            cached=cached,
        )
        return bool(value)

    def flags(self) -> pl.DataFrame:
        """Every flag with its environment-level value in each environment."""
        environments = self.environments()
        with self.engine.connect() as connection:
            names = list(
                connection.execute(
                    text("SELECT key FROM dictamesh_config_keys WHERE kind = 'flag' ORDER BY key")
                ).scalars()
            )
            rows = connection.execute(
                text(
                    "SELECT key, environment, value FROM dictamesh_config_values v WHERE "
                    "service = '' AND key = ANY(:names)"
                ),
                {"names": names},
            ).all()
        values = {(r[0], r[1]): bool(r[2]) for r in rows}
        data = [{"flag": n, **{e: values.get((n, e)) for e in environments}} for n in names]
        return pl.DataFrame(
            data,
            schema={"flag": pl.String, **{e: pl.Boolean for e in environments}},
            orient="row",
        )

    # -- permissions -----------------------------------------------------------------------
    def _allowed(
        self, connection: Connection, actor: Actor, permission: str, key: str, environment: str
    ) -> bool:
        if actor.type == "system":
            return True
        rows = connection.execute(
            text(
                "SELECT permission, key_pattern, environment_pattern FROM "
                "dictamesh_config_permissions WHERE principal IN (:name, :typed, '*') AND "
                "permission IN (:permission, 'admin')"
            ),
            {"name": actor.name, "typed": f"{actor.type}:{actor.name}", "permission": permission},
        ).all()
        return any(
            fnmatch.fnmatchcase(key, key_pattern) and fnmatch.fnmatchcase(environment, env_pattern)
            for _, key_pattern, env_pattern in rows
        )

    def _require(self, connection: Connection, permission: str, key: str, environment: str) -> None:
        if not self._allowed(connection, self.actor, permission, key, environment):
            raise PermissionDeniedError(
                f"{self.actor.type} {self.actor.name!r} lacks the {permission!r} permission "
                f"(key {key!r}, environment {environment!r}); nothing was changed.",
                remedy="ask an administrator for wb.config.grant(...).",
            )

    def can(self, permission: str, key: str = "*", environment: str = "*") -> bool:
        """Whether this view's actor holds `permission` for the key and environment."""
        with self.engine.connect() as connection:
            return self._allowed(connection, self.actor, permission, key, environment)

    def grant(
        self, principal: str, permission: str, *, keys: str = "*", environments: str = "*"
    ) -> None:
        """Give a principal (a user or service name, or '*') a permission on key and environment
        glob patterns. Needs 'admin' (or the system actor)."""
        if permission not in PERMISSIONS:
            raise UnknownNameError("permission", permission, PERMISSIONS)
        with self.engine.begin() as connection:
            self._require(connection, "admin", keys, environments)
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_permissions (principal, permission, "
                    "key_pattern, environment_pattern, granted_by) VALUES (:p, :perm, :k, :e, "
                    ":by) ON CONFLICT DO NOTHING"
                ),
                {
                    "p": principal,
                    "perm": permission,
                    "k": keys,
                    "e": environments,
                    "by": self.actor.name,
                },
            )
            audit.record(
                connection,
                self.actor.with_request(),
                "grant",
                key=keys,
                detail={
                    "principal": principal,
                    "permission": permission,
                    "environments": environments,
                },
            )

    def revoke(
        self, principal: str, permission: str, *, keys: str = "*", environments: str = "*"
    ) -> int:
        with self.engine.begin() as connection:
            self._require(connection, "admin", keys, environments)
            count = connection.execute(
                text(
                    "DELETE FROM dictamesh_config_permissions WHERE principal = :p AND "
                    "permission = :perm AND key_pattern = :k AND environment_pattern = :e"
                ),
                {"p": principal, "perm": permission, "k": keys, "e": environments},
            ).rowcount
            audit.record(
                connection,
                self.actor.with_request(),
                "revoke",
                key=keys,
                detail={
                    "principal": principal,
                    "permission": permission,
                    "environments": environments,
                },
            )
        return int(count or 0)

    def audit(
        self,
        *,
        key: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 200,
    ) -> pl.DataFrame:
        """The audit trail, newest first (`action` accepts '*' globs, e.g. 'secret.*')."""
        return audit.read(
            self.engine, key=key, action=action, actor=actor, since=since, limit=limit
        )

    # -- approvals -------------------------------------------------------------------------
    def _propose(
        self,
        connection: Connection,
        actor: Actor,
        scope: Scope,
        key: str,
        info: KeyInfo,
        value: Any,
        reason: str,
        rollback_of: int | None,
        reuse_secret: uuid.UUID | None,
    ) -> Proposal:
        deleting = value is _DELETE
        current = connection.execute(
            text(
                "SELECT value, version_id FROM dictamesh_config_values WHERE environment = :e "
                "AND service = :s AND component = :c AND key = :k"
            ),
            {"e": scope.environment, "s": scope.service, "c": scope.component, "k": key},
        ).first()
        secret_id = None
        if info.is_secret and not deleting:
            secret_id = reuse_secret or self._seal(connection, key, value)
        diff = self._diff_text(
            key,
            scope,
            current[0] if current else None,
            None if deleting else value,
            secret=info.is_secret,
            deleting=deleting,
            existed=current is not None,
        )
        proposal_id = int(
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_proposals (environment, service, component, "
                    "key, value, secret_id, is_delete, rollback_of, base_version_id, diff, reason, "
                    "proposed_by, proposed_by_type) VALUES (:e, :s, :c, :k, CAST(:v AS jsonb), "
                    ":secret, :del, :rb, :base, :diff, :reason, :by, :by_type) RETURNING id"
                ),
                {
                    "e": scope.environment,
                    "s": scope.service,
                    "c": scope.component,
                    "k": key,
                    "v": None if deleting or info.is_secret else json.dumps(value),
                    "secret": secret_id,
                    "del": deleting,
                    "rb": rollback_of,
                    "base": current[1] if current else None,
                    "diff": diff,
                    "reason": reason,
                    "by": actor.name,
                    "by_type": actor.type,
                },
            ).scalar_one()
        )
        audit.record(
            connection,
            actor,
            "propose",
            scope=scope,
            key=key,
            detail={"proposal_id": proposal_id, "reason": reason},
        )
        return self._proposal(connection, proposal_id)

    def _proposal(
        self, connection: Connection, proposal_id: int, *, lock: bool = False
    ) -> Proposal:
        row = connection.execute(
            text("SELECT * FROM dictamesh_config_proposals WHERE id = :id" + _FOR_UPDATE[lock]),  # noqa: S608
            {"id": proposal_id},
        ).first()
        if row is None:
            raise NotFoundError(
                f"Proposal #{proposal_id} does not exist.", remedy="see wb.config.proposals()."
            )
        return Proposal(
            id=int(row.id),
            scope=Scope(row.environment, row.service, row.component),
            key=row.key,
            status=row.status,
            proposed_by=row.proposed_by,
            reason=row.reason,
            diff=row.diff,
            is_delete=bool(row.is_delete),
            reviewed_by=row.reviewed_by,
            applied_version_id=row.applied_version_id,
        )

    def proposals(
        self, status: str | None = "proposed", environment: str | None = None
    ) -> pl.DataFrame:
        """Proposed changes (by default those awaiting review), oldest first."""
        clauses, params = ["TRUE"], {}
        if status:
            clauses.append("status = :status")
            params["status"] = status
        if environment:
            clauses.append("environment = :environment")
            params["environment"] = environment
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, status, environment, service, component, key, is_delete, diff, "  # noqa: S608
                    "reason, proposed_by, proposed_at, reviewed_by, reviewed_at, review_comment, "
                    "applied_version_id FROM dictamesh_config_proposals "
                    f"WHERE {' AND '.join(clauses)} ORDER BY id"
                ),
                params,
            ).all()
        return pl.DataFrame(
            [dict(r._mapping) for r in rows],
            schema={
                "id": pl.Int64,
                "status": pl.String,
                "environment": pl.String,
                "service": pl.String,
                "component": pl.String,
                "key": pl.String,
                "is_delete": pl.Boolean,
                "diff": pl.String,
                "reason": pl.String,
                "proposed_by": pl.String,
                "proposed_at": pl.Datetime("us", "UTC"),
                "reviewed_by": pl.String,
                "reviewed_at": pl.Datetime("us", "UTC"),
                "review_comment": pl.String,
                "applied_version_id": pl.Int64,
            },
            orient="row",
        )

    def approve(self, proposal_id: int, *, comment: str = "", apply: bool = True) -> Proposal:
        """Approve a proposal (someone other than its author, with 'approve' on its
        environment); by default it is applied at once."""
        return self._review(proposal_id, "approved", comment, apply=apply)

    def reject(self, proposal_id: int, *, comment: str = "") -> Proposal:
        return self._review(proposal_id, "rejected", comment, apply=False)

    def apply_proposal(self, proposal_id: int) -> Proposal:
        """Apply an approved proposal."""
        return self._review(proposal_id, "applied", "", apply=True)

    def _review(self, proposal_id: int, decision: str, comment: str, *, apply: bool) -> Proposal:
        actor = self.actor.with_request()
        notices: list[ConfigChange] = []
        with self.engine.begin() as connection:
            proposal = self._proposal(connection, proposal_id, lock=True)
            if decision == "applied":
                if proposal.status != "approved":
                    raise ConflictError(
                        f"Proposal #{proposal_id} is {proposal.status}; only approved proposals "
                        "can be applied.",
                        remedy="approve it first.",
                    )
            elif proposal.status != "proposed":
                raise ConflictError(
                    f"Proposal #{proposal_id} is already {proposal.status}.",
                    remedy="see wb.config.proposals(status=None).",
                )
            else:
                if actor.name == proposal.proposed_by and actor.type != "system":
                    raise PermissionDeniedError(
                        f"{actor.name!r} proposed #{proposal_id} and cannot also review it.",
                        remedy="ask another approver.",
                    )
                if not self._allowed(
                    connection, actor, "approve", proposal.key, proposal.scope.environment
                ):
                    raise PermissionDeniedError(
                        f"{actor.type} {actor.name!r} may not review changes in "
                        f"{proposal.scope.environment!r}; nothing was changed.",
                        remedy="ask an administrator for wb.config.grant(NAME, 'approve', "
                        f"environments={proposal.scope.environment!r}).",
                    )
                connection.execute(
                    text(
                        "UPDATE dictamesh_config_proposals SET status = :st, reviewed_by = :by, "
                        "reviewed_at = now(), review_comment = :c WHERE id = :id"
                    ),
                    {"st": decision, "by": actor.name, "c": comment, "id": proposal_id},
                )
                audit.record(
                    connection,
                    actor,
                    "approve" if decision == "approved" else "reject",
                    scope=proposal.scope,
                    key=proposal.key,
                    detail={"proposal_id": proposal_id, "comment": comment},
                )
            if apply and decision != "rejected":
                version = self._apply_proposal_row(connection, actor, proposal_id, notices)
                connection.execute(
                    text(
                        "UPDATE dictamesh_config_proposals SET status = 'applied', "
                        "applied_version_id = :v WHERE id = :id"
                    ),
                    {"v": version.id, "id": proposal_id},
                )
            result = self._proposal(connection, proposal_id)
        self._after_commit(notices)
        return result

    def _apply_proposal_row(
        self, connection: Connection, actor: Actor, proposal_id: int, notices: list[ConfigChange]
    ) -> ConfigVersion:
        row = connection.execute(
            text("SELECT * FROM dictamesh_config_proposals WHERE id = :id"), {"id": proposal_id}
        ).one()
        scope = Scope(row.environment, row.service, row.component)
        info = self._key_info(connection, row.key)
        assert info is not None  # noqa: S101 - proposals exist only for defined keys
        current = connection.execute(
            text(
                "SELECT version_id FROM dictamesh_config_values WHERE environment = :e AND "
                "service = :s AND component = :c AND key = :k"
            ),
            {"e": scope.environment, "s": scope.service, "c": scope.component, "k": row.key},
        ).scalar()
        if current != row.base_version_id:
            raise ConflictError(
                f"Key {row.key!r} in {scope} changed since proposal #{proposal_id} was made "
                f"(version #{current} now, #{row.base_version_id} then); nothing was applied.",
                remedy="reject it and propose the change again against the current value.",
            )
        value = _DELETE if row.is_delete else row.value
        if not row.is_delete and not info.is_secret:
            validate_against(row.key, info.schema, value, scope, secret=False)
        return self._write(
            connection,
            Actor(row.proposed_by, row.proposed_by_type, actor.request_id),
            scope,
            row.key,
            info,
            value,
            reason=row.reason,
            action="rollback" if row.rollback_of else ("delete" if row.is_delete else "set"),
            rollback_of=row.rollback_of,
            reuse_secret=row.secret_id,
            proposal_id=proposal_id,
            notices=notices,
        )

    # -- batches (import) ------------------------------------------------------------------
    def apply_many(
        self,
        changes: Sequence[tuple[Scope, str, Any]],
        *,
        reason: str = "",
        action: str = "import",
        secrets: Iterable[str] = (),
    ) -> list[ConfigVersion | Proposal]:
        """Validate every change, then apply all of them in one transaction (or none)."""
        secret_keys = set(secrets)
        actor = self.actor.with_request()
        change_set = uuid.uuid4()
        notices: list[ConfigChange] = []
        results: list[ConfigVersion | Proposal] = []
        with self.engine.begin() as connection:
            prepared = []
            for scope, key, value in changes:
                self._check_key(key)
                approval = self._check_environment(connection, scope.environment)
                info = self._prepare_key(
                    connection, key, secret=True if key in secret_keys else None, value=value
                )
                _check_json(key, value, secret=info.is_secret)
                validate_against(key, info.schema, value, scope, secret=info.is_secret)
                prepared.append((scope, key, value, info, approval))
            for scope, key, value, info, approval in prepared:
                results.append(
                    self._propose_or_write(
                        connection,
                        actor,
                        scope,
                        key,
                        info,
                        value,
                        needs_approval=approval,
                        reason=reason,
                        action=action,
                        notices=notices,
                        change_set=change_set,
                    )
                )
        self._after_commit(notices)
        return results

    # -- import / export -------------------------------------------------------------------
    def export(
        self,
        environment: str,
        *,
        service: str | None = None,
        component: str | None = None,
        fmt: str = "yaml",
        include_secrets: bool = False,
    ) -> str:
        """One environment as YAML or JSON (every level), or one place's effective `.env`."""
        from workbench.config import io

        return io.export(
            self,
            environment,
            service=service,
            component=component,
            fmt=io.format_for("", fmt),
            include_secrets=include_secrets,
        )

    def import_file(self, path: str, **kwargs: Any) -> Any:
        """Import a YAML/JSON/.env file atomically (see `workbench.config.io.import_text`)."""
        from workbench.config import io

        return io.import_file(self, path, **kwargs)

    # -- master key rotation ---------------------------------------------------------------
    def rotate_master_key(self, new: MasterKeyProvider | None = None) -> int:
        """Re-wrap every data key under the new master key (default: the provider's first key)
        in one transaction; readers keep working throughout. Returns how many were re-wrapped."""
        actor = self.actor.with_request()
        old = self._keys()
        target = (new or old).primary()
        from workbench.config.secrets import key_id

        with self.engine.begin() as connection:
            self._require(connection, "admin", "*", "*")
            rows = connection.execute(
                text(
                    "SELECT id, key, nonce, ciphertext, key_nonce, wrapped_key, master_key_id "
                    "FROM dictamesh_config_secrets WHERE master_key_id <> :target FOR UPDATE"
                ),
                {"target": key_id(target)},
            ).all()
            for row in rows:
                sealed = Sealed(
                    str(row[0]), bytes(row[2]), bytes(row[3]), bytes(row[4]), bytes(row[5]), row[6]
                )
                try:
                    key_nonce, wrapped, new_id = rewrap(old, target, sealed, row[1])
                except SecretError as exc:
                    raise type(exc)(
                        f"Rotation stopped at secret {row[1]!r} ({row[0]}); nothing was "
                        f"re-wrapped. {exc.message}",
                        remedy=exc.remedy,
                    ) from None
                connection.execute(
                    text(
                        "UPDATE dictamesh_config_secrets SET key_nonce = :n, wrapped_key = :w, "
                        "master_key_id = :m, rewrapped_at = now() WHERE id = :id"
                    ),
                    {"n": key_nonce, "w": wrapped, "m": new_id, "id": row[0]},
                )
            audit.record(
                connection,
                actor,
                "rotate_key",
                detail={"rewrapped": len(rows), "master_key_id": key_id(target)},
            )
        if new is not None:
            self._shared.keys = lambda: new
        return len(rows)

    def master_key_ids(self) -> pl.DataFrame:
        """How many secrets each master key (by fingerprint) wraps."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT master_key_id, count(*) FROM dictamesh_config_secrets "
                    "GROUP BY master_key_id ORDER BY 1"
                )
            ).all()
        return pl.DataFrame(
            [{"master_key_id": r[0], "secrets": int(r[1])} for r in rows],
            schema={"master_key_id": pl.String, "secrets": pl.Int64},
            orient="row",
        )

    # -- watching --------------------------------------------------------------------------
    def watch(
        self,
        pattern: str | Sequence[str],
        callback: Callback,
        *,
        environment: str | None = None,
        service: str | None = None,
        name: str | None = None,
    ) -> Watch:
        """Call `callback(change)` within a second of every committed change of a key matching
        the glob pattern(s) (optionally only in one environment / for one service). The watcher
        is registered with heartbeats in ``dictamesh_config_watchers``; `stop()` ends it."""
        patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        if environment is not None:
            with self.engine.connect() as connection:
                self._check_environment(connection, environment)
        return self._shared.hub.register(
            patterns,
            callback,
            name=name or f"{self.actor.name}",
            environment=environment,
            service=service,
        )

    def watchers(self) -> pl.DataFrame:
        """Registered watchers with their last heartbeat and whether they are alive."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id::text AS id, name, patterns, environment, service, host, pid, "
                    "started_at, last_heartbeat, notified, last_version_id, "
                    "last_heartbeat > now() - make_interval(secs => :grace) AS alive "
                    "FROM dictamesh_config_watchers ORDER BY started_at"
                ),
                {"grace": 3 * 5.0},
            ).all()
        return pl.DataFrame(
            [dict(r._mapping) | {"patterns": list(r.patterns)} for r in rows],
            schema={
                "id": pl.String,
                "name": pl.String,
                "patterns": pl.List(pl.String),
                "environment": pl.String,
                "service": pl.String,
                "host": pl.String,
                "pid": pl.Int64,
                "started_at": pl.Datetime("us", "UTC"),
                "last_heartbeat": pl.Datetime("us", "UTC"),
                "notified": pl.Int64,
                "last_version_id": pl.Int64,
                "alive": pl.Boolean,
            },
            orient="row",
        )

    # -- tree for the editor ---------------------------------------------------------------
    def values(self, environment: str | None = None) -> pl.DataFrame:
        """Every value set at any level (secrets masked)."""
        with self.engine.connect() as connection:
            if environment is not None:
                self._check_environment(connection, environment)
            rows = connection.execute(
                text(
                    "SELECT v.environment, v.service, v.component, v.key, k.kind, CASE WHEN "
                    "v.secret_id IS NOT NULL THEN to_jsonb(CAST(:mask AS text)) "
                    "ELSE v.value END::text AS value, "
                    "v.version_id, v.updated_by, v.updated_at FROM dictamesh_config_values v "
                    "JOIN dictamesh_config_keys k USING (key) WHERE (CAST(:env AS text) IS NULL OR "
                    "v.environment = :env) ORDER BY 1, 2, 3, 4"
                ),
                {"mask": MASK, "env": environment},
            ).all()
        return pl.DataFrame(
            [dict(r._mapping) for r in rows],
            schema={
                "environment": pl.String,
                "service": pl.String,
                "component": pl.String,
                "key": pl.String,
                "kind": pl.String,
                "value": pl.String,
                "version_id": pl.Int64,
                "updated_by": pl.String,
                "updated_at": pl.Datetime("us", "UTC"),
            },
            orient="row",
        )


class ConfigView:
    """One place's configuration (environment, service, component) with cached reads."""

    def __init__(self, config: Config, scope: Scope) -> None:
        self.config = config
        self.scope = scope

    def __repr__(self) -> str:
        return f"ConfigView({self.scope})"

    def _where(self) -> dict[str, Any]:
        return {
            "environment": self.scope.environment,
            "service": self.scope.service or None,
            "component": self.scope.component or None,
        }

    def get(self, key: str, default: Any = _MISSING) -> Any:
        return self.config.get(key, default=default, cached=True, **self._where())

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def flag(self, name: str) -> bool:
        return self.config.flag(name, **self._where())

    def snapshot(self) -> dict[str, Any]:
        return self.config.snapshot(**self._where())

    def watch(self, pattern: str | Sequence[str], callback: Callback, **kwargs: Any) -> Watch:
        """Changes of matching keys that affect this place (its level or a less specific one)."""
        return self.config.watch(
            pattern,
            lambda change: (
                callback(change) if change.scope.component in ("", self.scope.component) else None
            ),
            environment=self.scope.environment,
            service=self.scope.service or None,
            **kwargs,
        )


__all__ = ["SYSTEM", "Config", "ConfigView", "parse_json_value", "validate_against"]
