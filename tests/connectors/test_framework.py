"""Capabilities, typed config, discovery and `dictamesh connectors list` (no stack needed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field, SecretStr

from connectors.base.capabilities import (
    Adapter,
    Capability,
    EntityRecord,
    ResourceAdapter,
    ResourcePage,
    Stream,
    StreamingAdapter,
    WebhookAdapter,
)
from connectors.base.config import ConnectorConfig, build_config, read_connectors_file
from connectors.base.errors import ConnectorConfigError, UnsupportedCapabilityError
from connectors.base.registry import connector_class, installed
from tests.helpers import run_cli
from workbench.errors import UnknownNameError


class ReadOnly(ResourceAdapter[ConnectorConfig], StreamingAdapter[ConnectorConfig]):
    name = "readonly"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.READ, Capability.PAGINATION}
    )

    def streams(self) -> list[Stream]:
        return [Stream("things", "thing")]

    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        yield {"id": 1}

    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        return EntityRecord("thing", str(record["id"]), record)

    def _list(self, resource: str, *, page: Any, page_size: int, **filters: Any) -> ResourcePage:
        return ResourcePage([{"id": 1}], None)


def test_undeclared_capabilities_are_refused_clearly() -> None:
    adapter = ReadOnly(ConnectorConfig())
    assert adapter.list("things").records == [{"id": 1}]
    with pytest.raises(UnsupportedCapabilityError) as caught:
        adapter.create("things", {"id": 2})
    assert "'readonly' does not support 'write'" in str(caught.value)
    assert "pagination, read" in str(caught.value)
    with pytest.raises(UnsupportedCapabilityError):
        adapter.search("things", "x")
    with pytest.raises(UnsupportedCapabilityError):
        list(adapter.changes())


def test_declaring_a_capability_without_its_hooks_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="declares 'webhooks' but does not implement"):

        class Broken(WebhookAdapter[ConnectorConfig]):
            capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.WEBHOOKS})

            def _verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> None:
                pass

    with pytest.raises(TypeError, match="does not implement streams"):

        class NoStreams(Adapter[ConnectorConfig]):
            capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ})


class TokenConfig(ConnectorConfig):
    base_url: str = Field(pattern=r"^https?://")
    account_id: int = Field(ge=1)
    token: SecretStr


def test_config_errors_name_the_field_and_hide_secrets() -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        build_config(
            TokenConfig, "crm", {"base_url": "ftp://x", "account_id": 0, "token": "hunter2"}
        )
    message = str(caught.value)
    assert "base_url" in message and "'ftp://x'" in message
    assert "account_id" in message
    assert "hunter2" not in message
    with pytest.raises(ConnectorConfigError) as missing:
        build_config(TokenConfig, "crm", {"base_url": "http://x", "account_id": 1})
    assert "token" in str(missing.value)
    assert "DICTAMESH_CONNECTOR_CRM_TOKEN" in str(missing.value)
    with pytest.raises(ConnectorConfigError, match=r"tokn: unknown field; did you mean .token."):
        build_config(TokenConfig, "crm", {"base_url": "http://x", "account_id": 1, "tokn": "x"})


def test_secrets_from_a_secret_source_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DICTAMESH_CONNECTOR_CRM_TOKEN", "from-env")
    values = {"base_url": "http://x", "account_id": 1}
    config = build_config(TokenConfig, "crm", values)
    assert config.token.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)
    served = build_config(TokenConfig, "crm", values, secrets=lambda i, f: f"{i}:{f}:vault")
    assert served.token.get_secret_value() == "crm:token:vault"


def test_connectors_file(tmp_path: Path) -> None:
    path = tmp_path / "connectors.yaml"
    assert read_connectors_file(path) == {}
    path.write_text("support:\n  connector: chatwoot\n  account_id: 1\n")
    assert read_connectors_file(path) == {"support": {"connector": "chatwoot", "account_id": 1}}
    path.write_text("- just a list\n")
    with pytest.raises(ConnectorConfigError, match="must map instance names"):
        read_connectors_file(path)


def test_builtins_are_discovered_through_entry_points() -> None:
    names = {info.name for info in installed()}
    assert {"chatwoot", "rest", "sql", "files"} <= names
    assert connector_class("files").__name__ == "FilesConnector"
    with pytest.raises(UnknownNameError, match="Did you mean 'files'"):
        connector_class("filez")


def test_connectors_list_cli() -> None:
    result = run_cli("connectors", "list")
    assert result.returncode == 0, result.stderr
    for name in ("chatwoot", "rest", "sql", "files"):
        assert name in result.stdout
    assert "webhooks" in result.stdout and "pagination" in result.stdout


def test_reprs_never_raise() -> None:
    adapter = ReadOnly(ConnectorConfig())
    assert "readonly" in repr(adapter)
    adapter.config = None  # type: ignore[assignment]
    assert repr(adapter)


def test_secrets_from_the_configuration_service(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.base.api import Connectors

    asked: list[tuple[str, str]] = []

    def lookup(key: str, environment: str) -> str:
        asked.append((key, environment))
        return f"{environment}-token"

    connectors = Connectors(None, None, config_service=lookup)  # type: ignore[arg-type]
    handle = connectors.add(
        "support",
        connector="chatwoot",
        base_url="http://127.0.0.1:9",
        account_id=1,
        config_environment="production",
    )
    assert handle.adapter.config.api_access_token.get_secret_value() == "production-token"
    assert ("connectors.support.api_access_token", "production") in asked
    # Without a config_environment the environment variable is the source.
    monkeypatch.setenv("DICTAMESH_CONNECTOR_OTHER_API_ACCESS_TOKEN", "env-token")
    other = connectors.add(
        "other", connector="chatwoot", base_url="http://127.0.0.1:9", account_id=1
    )
    assert other.adapter.config.api_access_token.get_secret_value() == "env-token"


def test_closing_connectors_shuts_every_adapter_down_though_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.base.api import Connectors

    connectors = Connectors(None, None)  # type: ignore[arg-type]
    failing = connectors.add("failing", connector="files", path=str(tmp_path))
    other = connectors.add("other", connector="files", path=str(tmp_path))

    def broken() -> None:
        raise RuntimeError("the source hung up")

    monkeypatch.setattr(failing.adapter, "shutdown", broken)
    opened = [failing.adapter, other.adapter]
    with pytest.raises(RuntimeError, match="hung up"):
        connectors.close()
    assert not opened[1]._initialized
    # Both reopen on their next use.
    assert failing.adapter is not opened[0] and other.adapter is not opened[1]
