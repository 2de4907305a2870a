"""Discovery: connectors are entry points of the group ``dictamesh.connectors``, built-ins too."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from connectors.base.capabilities import Adapter
from connectors.base.errors import ConnectorConfigError
from workbench.errors import TerminalError, UnknownNameError

GROUP = "dictamesh.connectors"


@dataclass(frozen=True)
class ConnectorInfo:
    """What `dictamesh connectors list` shows of an installed connector."""

    name: str
    version: str
    capabilities: tuple[str, ...]
    description: str
    target: str


def connector_classes() -> dict[str, type[Adapter]]:  # type: ignore[type-arg]
    """Every installed connector class by entry-point name."""
    found: dict[str, type[Adapter]] = {}  # type: ignore[type-arg]
    for entry in metadata.entry_points(group=GROUP):
        try:
            loaded = entry.load()
        except ImportError as exc:
            raise TerminalError(
                f"Connector {entry.name!r} ({entry.value}) cannot be imported: {exc}.",
                remedy="install its package's dependencies, or uninstall it.",
            ) from None
        if not (isinstance(loaded, type) and issubclass(loaded, Adapter)):
            raise TerminalError(
                f"Entry point {entry.name!r} in {GROUP} is {loaded!r}, not an Adapter subclass.",
                remedy=f"point it at a connectors.base.Adapter subclass (value: {entry.value}).",
            )
        found[entry.name] = loaded
    return found


def connector_class(name: str) -> type[Adapter]:  # type: ignore[type-arg]
    classes = connector_classes()
    if name not in classes:
        raise UnknownNameError("connector", name, classes)
    return classes[name]


def installed() -> list[ConnectorInfo]:
    infos = []
    for entry in metadata.entry_points(group=GROUP):
        cls = connector_class(entry.name)
        infos.append(
            ConnectorInfo(
                name=entry.name,
                version=cls.version,
                capabilities=tuple(sorted(c.value for c in cls.capabilities)),
                description=cls.description or (cls.__doc__ or "").strip().splitlines()[0],
                target=entry.value,
            )
        )
    return sorted(infos, key=lambda i: i.name)


def ensure_name(name: str) -> str:
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ConnectorConfigError(
            f"Instance name {name!r} must be letters, digits, '-' or '_'.",
            remedy="rename the entry in connectors.yaml.",
        )
    return name
