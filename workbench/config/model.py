"""The configuration model: scopes, actors, keys, versions, explanations and their errors."""

from __future__ import annotations

import getpass
import html
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from workbench.errors import TerminalError

ActorType = Literal["user", "service", "api_key", "system"]
ACTOR_TYPES: tuple[str, ...] = ("user", "service", "api_key", "system")
Kind = Literal["value", "secret", "flag"]
LEVELS = ("component", "service", "environment")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,199}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


class ConfigError(TerminalError):
    """A configuration request that was refused; nothing was applied."""


class InvalidValueError(ConfigError):
    """A value that is not JSON, or that its key's JSON Schema rejects."""

    def __init__(self, message: str, *, key: str, rule: str | None = None, remedy: str) -> None:
        super().__init__(message, remedy=remedy)
        self.key = key
        self.rule = rule


class PermissionDeniedError(ConfigError):
    """The acting principal lacks the permission; nothing was revealed or applied."""


class ConflictError(ConfigError):
    """The value changed since the request was prepared (a stale proposal or base version)."""


class NotFoundError(ConfigError):
    """A key, version or proposal that does not exist."""


@dataclass(frozen=True)
class Actor:
    """Who acts: audited with every change and every secret read."""

    name: str
    type: ActorType = "user"
    request_id: str | None = None
    address: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ACTOR_TYPES:
            raise ConfigError(
                f"Actor type {self.type!r} is not one of {', '.join(ACTOR_TYPES)}.",
                remedy="pass type='user', 'service', 'api_key' or 'system'.",
            )
        if not self.name:
            raise ConfigError("An actor needs a name.", remedy="pass Actor(name=...).")

    def with_request(self) -> Actor:
        """This actor with a fresh request id when it has none."""
        if self.request_id:
            return self
        return Actor(self.name, self.type, uuid.uuid4().hex, self.address, self.user_agent)

    @staticmethod
    def local() -> Actor:
        """The operating-system user running this process."""
        try:
            name = getpass.getuser()
        except Exception:
            name = "unknown"
        return Actor(name=name, type="user")


SYSTEM = Actor(name="system", type="system")


@dataclass(frozen=True)
class Scope:
    """environment -> service -> component; empty service/component mean "every"."""

    environment: str
    service: str = ""
    component: str = ""

    def __post_init__(self) -> None:
        if self.component and not self.service:
            raise ConfigError(
                f"Component {self.component!r} needs a service.",
                remedy="pass service=... together with component=...",
            )
        for label, value in (("service", self.service), ("component", self.component)):
            if value and not NAME_PATTERN.match(value):
                raise ConfigError(
                    f"The {label} name {value!r} is not valid.",
                    remedy="use letters, digits, '_', '-', '.' (at most 100 characters).",
                )

    @property
    def level(self) -> str:
        return "component" if self.component else "service" if self.service else "environment"

    def chain(self) -> list[Scope]:
        """The scopes consulted for a read here, most specific first."""
        scopes = [self]
        if self.component:
            scopes.append(Scope(self.environment, self.service))
        if self.service:
            scopes.append(Scope(self.environment))
        return scopes

    def __str__(self) -> str:
        return "/".join(p for p in (self.environment, self.service, self.component) if p)


@dataclass(frozen=True)
class KeyInfo:
    key: str
    kind: Kind
    description: str
    schema: dict[str, Any] | None
    tags: list[str]
    owners: list[str]

    @property
    def is_secret(self) -> bool:
        return self.kind == "secret"


@dataclass(frozen=True)
class ConfigVersion:
    """One immutable change. Secret values are never held here, only a mask."""

    id: int
    scope: Scope
    key: str
    action: str
    old_value: Any
    new_value: Any
    is_deleted: bool
    diff: str
    author: str
    author_type: str
    reason: str
    created_at: datetime
    request_id: str | None = None
    rollback_of: int | None = None
    is_secret: bool = False

    def __repr__(self) -> str:
        shown = "<secret>" if self.is_secret else _short(self.new_value)
        what = "deleted" if self.is_deleted else f"= {shown}"
        return f"ConfigVersion(#{self.id} {self.scope}:{self.key} {what} by {self.author})"


@dataclass(frozen=True)
class Proposal:
    """A change awaiting review in an environment that requires approval."""

    id: int
    scope: Scope
    key: str
    status: str
    proposed_by: str
    reason: str
    diff: str
    is_delete: bool = False
    reviewed_by: str | None = None
    applied_version_id: int | None = None

    def __repr__(self) -> str:
        return f"Proposal(#{self.id} {self.scope}:{self.key} {self.status} by {self.proposed_by})"


@dataclass(frozen=True)
class Level:
    """One level consulted by `explain`."""

    scope: Scope
    level: str
    found: bool
    value: Any = None
    version_id: int | None = None
    updated_by: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Explanation:
    """Which level supplied a value, and what it overrides."""

    key: str
    scope: Scope
    levels: list[Level]
    is_secret: bool = False
    default: Any = None
    has_default: bool = False

    @property
    def winner(self) -> Level | None:
        return next((level for level in self.levels if level.found), None)

    @property
    def value(self) -> Any:
        winner = self.winner
        return winner.value if winner else self.default

    @property
    def overridden(self) -> list[Level]:
        found = [level for level in self.levels if level.found]
        return found[1:]

    def _shown(self, value: Any) -> str:
        return "••••••" if self.is_secret else json.dumps(value, default=str)

    def __str__(self) -> str:
        lines = [f"{self.key} in {self.scope}:"]
        winner = self.winner
        for level in self.levels:
            if not level.found:
                lines.append(f"  {level.level:<11} {level.scope}: (not set)")
                continue
            mark = "wins" if level is winner else "overridden"
            lines.append(
                f"  {level.level:<11} {level.scope}: {self._shown(level.value)}  "
                f"[{mark}, version #{level.version_id} by {level.updated_by}]"
            )
        if winner is None:
            source = f"schema default {self._shown(self.default)}" if self.has_default else "unset"
            lines.append(f"  -> {source}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        try:
            winner = self.winner
            where = winner.level if winner else "unset"
            return f"Explanation({self.key!r} in {self.scope}: from {where})"
        except Exception:
            return "Explanation(<unavailable>)"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(level.level)}</td><td>{html.escape(str(level.scope))}</td>"
            f"<td><code>{html.escape(self._shown(level.value)) if level.found else '—'}</code></td>"
            f"<td>{'wins' if level is self.winner else ('overridden' if level.found else '')}</td>"
            f"<td>{level.version_id or ''}</td></tr>"
            for level in self.levels
        )
        return (
            f"<div><strong>{html.escape(self.key)}</strong> in {html.escape(str(self.scope))}"
            "<table><tr><th>level</th><th>scope</th><th>value</th><th></th><th>version</th></tr>"
            f"{rows}</table></div>"
        )


@dataclass(frozen=True)
class ConfigChange:
    """What a watcher is told: which key changed where; secret values are never included."""

    version_id: int
    scope: Scope
    key: str
    action: str
    is_secret: bool = False
    value: Any = field(default=None, repr=False)
    has_value: bool = False
    committed_at: float = 0.0  # epoch seconds, for propagation measurement

    def __repr__(self) -> str:
        return f"ConfigChange(#{self.version_id} {self.scope}:{self.key} {self.action})"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
