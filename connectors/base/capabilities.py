"""What a connector can do, as capability classes; the framework refuses undeclared calls.

A connector subclasses `Adapter` and the capability classes it implements (`ResourceAdapter`,
`StreamingAdapter`, `WebhookAdapter`) and lists its `capabilities`. Each public operation checks
the declaration first and raises `UnsupportedCapabilityError` naming what the connector does
support; a class that declares a capability without implementing its hook fails when defined.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from connectors.base.config import ConnectorConfig
from connectors.base.errors import UnsupportedCapabilityError


class Capability(StrEnum):
    READ = "read"  # streams of records for sync
    WRITE = "write"  # create / update / delete
    STREAM = "stream"  # change streams
    WEBHOOKS = "webhooks"  # verified deliveries become events
    BATCH = "batch"  # many records per call
    SEARCH = "search"  # query a resource
    PAGINATION = "pagination"  # list() pages


# Which hook each capability needs implemented.
_HOOKS: dict[Capability, tuple[str, ...]] = {
    Capability.READ: ("streams", "read", "map_record"),
    Capability.WRITE: ("_create", "_update", "_delete"),
    Capability.STREAM: ("_changes",),
    Capability.WEBHOOKS: ("_verify_webhook", "_parse_webhook"),
    Capability.SEARCH: ("_search",),
    Capability.PAGINATION: ("_list",),
}


@dataclass(frozen=True)
class Stream:
    """One kind of record a connector reads: its entity type, key and incremental field."""

    name: str
    entity_type: str
    primary_key: str = "id"
    cursor_field: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Link:
    """An edge from a record's entity to another entity of the same (or another) system."""

    type: str
    entity_type: str
    source_id: str
    cardinality: str = "many_to_one"
    source_system: str | None = None  # None: the connector's own


@dataclass
class EntityRecord:
    """A source record mapped to a catalog entity."""

    entity_type: str
    source_id: str
    attributes: dict[str, Any]
    display_name: str | None = None
    links: list[Link] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    deleted: bool = False
    cursor: Any = None  # the record's incremental value, if its stream has one


@dataclass(frozen=True)
class SchemaDeclaration:
    """A JSON Schema the connector wants registered (``wb.schemas``) under `subject`."""

    subject: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class HealthStatus:
    healthy: bool
    detail: str = ""
    latency_ms: float = 0.0


@dataclass(frozen=True)
class ResourcePage:
    """One page of a resource listing; pass `next_page` back to get the following one."""

    records: list[dict[str, Any]]
    next_page: Any = None


@dataclass(frozen=True)
class WebhookEvent:
    """One verified webhook delivery: its event name, the entities it changes, its payload."""

    event: str
    records: list[EntityRecord]
    payload: dict[str, Any]
    occurred_at: datetime | None = None


ConfigT = TypeVar("ConfigT", bound=ConnectorConfig)
F = TypeVar("F", bound=Callable[..., Any])


def placeholder(func: F) -> F:
    """Marks a hook a capability needs overridden."""
    func.__placeholder__ = True  # type: ignore[attr-defined]
    return func


class Adapter(Generic[ConfigT]):
    """Every connector: lifecycle (initialize, health, shutdown) and declared capabilities."""

    name: ClassVar[str] = "adapter"
    version: ClassVar[str] = "0.1.0"
    description: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    config_class: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for capability in cls.capabilities:
            for hook in _HOOKS.get(capability, ()):
                method = getattr(cls, hook, None)
                if method is None or getattr(method, "__placeholder__", False):
                    raise TypeError(
                        f"{cls.__name__} declares {capability.value!r} but does not implement "
                        f"{hook}()"
                    )

    def __init__(self, config: ConfigT, *, instance: str | None = None) -> None:
        self.config = config
        self.instance = instance or self.name
        self._initialized = False

    def __repr__(self) -> str:
        try:
            caps = ", ".join(sorted(c.value for c in self.capabilities))
            return f"{type(self).__name__}(instance={self.instance!r}, capabilities=[{caps}])"
        except Exception:
            return f"{type(self).__name__}(<unavailable>)"

    # -- capabilities
    @property
    def source_system(self) -> str:
        """The catalog's `source_system` of this instance's entities."""
        return self.instance

    def supports(self, capability: Capability | str) -> bool:
        return Capability(capability) in self.capabilities

    def require(self, capability: Capability | str) -> None:
        if not self.supports(capability):
            raise UnsupportedCapabilityError(
                self.instance, Capability(capability).value, (c.value for c in self.capabilities)
            )

    # -- lifecycle
    def initialize(self) -> None:
        """Open clients, check configuration; called once before the first operation."""
        self._initialized = True

    def health(self) -> HealthStatus:
        """A cheap call proving the source answers; override for a real probe."""
        started = time.monotonic()
        self.check()
        return HealthStatus(True, "ok", (time.monotonic() - started) * 1000)

    def check(self) -> None:
        """Raise if the source is unreachable or the credentials are refused."""

    def shutdown(self) -> None:
        self._initialized = False

    def __enter__(self) -> Adapter[ConfigT]:
        if not self._initialized:
            self.initialize()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- READ: what `sync` uses
    @placeholder
    def streams(self) -> list[Stream]:
        self.require(Capability.READ)
        raise NotImplementedError

    @placeholder
    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        """Records of `stream`, oldest change first when the stream has a cursor field;
        with `cursor`, only records changed at or after it."""
        self.require(Capability.READ)
        raise NotImplementedError

    @placeholder
    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        self.require(Capability.READ)
        raise NotImplementedError

    def schemas(self) -> list[SchemaDeclaration]:
        """Schemas to register before a sync (SQL tables, files); none by default."""
        return []


class ResourceAdapter(Adapter[ConfigT]):
    """Resources: list (paginated), get, search, create, update, delete."""

    def list(
        self, resource: str, *, page: Any = None, page_size: int = 25, **filters: Any
    ) -> ResourcePage:
        self.require(Capability.PAGINATION)
        return self._list(resource, page=page, page_size=page_size, **filters)

    def get(self, resource: str, id: str | int) -> dict[str, Any]:
        self.require(Capability.READ)
        return self._get(resource, id)

    def search(self, resource: str, query: str, **filters: Any) -> builtins.list[dict[str, Any]]:
        self.require(Capability.SEARCH)
        return self._search(resource, query, **filters)

    def create(self, resource: str, data: Mapping[str, Any]) -> dict[str, Any]:
        self.require(Capability.WRITE)
        return self._create(resource, data)

    def update(self, resource: str, id: str | int, data: Mapping[str, Any]) -> dict[str, Any]:
        self.require(Capability.WRITE)
        return self._update(resource, id, data)

    def delete(self, resource: str, id: str | int) -> None:
        self.require(Capability.WRITE)
        self._delete(resource, id)

    @placeholder
    def _list(self, resource: str, *, page: Any, page_size: int, **filters: Any) -> ResourcePage:
        raise UnsupportedCapabilityError(self.instance, "pagination", [])

    @placeholder
    def _get(self, resource: str, id: str | int) -> dict[str, Any]:
        raise UnsupportedCapabilityError(self.instance, "get", [])

    @placeholder
    def _search(self, resource: str, query: str, **filters: Any) -> builtins.list[dict[str, Any]]:
        raise UnsupportedCapabilityError(self.instance, "search", [])

    @placeholder
    def _create(self, resource: str, data: Mapping[str, Any]) -> dict[str, Any]:
        raise UnsupportedCapabilityError(self.instance, "write", [])

    @placeholder
    def _update(self, resource: str, id: str | int, data: Mapping[str, Any]) -> dict[str, Any]:
        raise UnsupportedCapabilityError(self.instance, "write", [])

    @placeholder
    def _delete(self, resource: str, id: str | int) -> None:
        raise UnsupportedCapabilityError(self.instance, "write", [])


class StreamingAdapter(Adapter[ConfigT]):
    """Change streams: records as they change, from a position on."""

    def changes(self, since: Any = None) -> Iterator[EntityRecord]:
        self.require(Capability.STREAM)
        return self._changes(since)

    @placeholder
    def _changes(self, since: Any) -> Iterator[EntityRecord]:
        raise UnsupportedCapabilityError(self.instance, "stream", [])


class WebhookAdapter(Adapter[ConfigT]):
    """Webhooks: verify a delivery, then turn it into entity changes."""

    def receive(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify (raise `WebhookVerificationError` when it does not) and parse one delivery."""
        self.require(Capability.WEBHOOKS)
        lowered = {k.lower(): v for k, v in headers.items()}
        self._verify_webhook(body, lowered)
        return self._parse_webhook(body, lowered)

    @placeholder
    def _verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> None:
        raise UnsupportedCapabilityError(self.instance, "webhooks", [])

    @placeholder
    def _parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        raise UnsupportedCapabilityError(self.instance, "webhooks", [])
