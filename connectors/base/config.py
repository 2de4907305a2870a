"""Typed connector configuration: pydantic models, validated with messages that name the field.

A connector instance is configured from (later wins):

1. its entry in the connectors file (``$DICTAMESH_HOME/connectors.yaml``), e.g.::

       support:
         connector: chatwoot
         base_url: https://chat.example.com
         account_id: 1

2. values passed in code (``wb.connectors.add("support", connector="chatwoot", ...)``);
3. for secret fields (typed ``SecretStr``) left unset: a `SecretSource`, the configuration service
   when one is plugged in, otherwise the environment variable
   ``DICTAMESH_CONNECTOR_<INSTANCE>_<FIELD>`` (upper case, ``-`` as ``_``), e.g.
   ``DICTAMESH_CONNECTOR_SUPPORT_API_ACCESS_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from connectors.base.errors import ConnectorConfigError
from workbench.errors import did_you_mean

ENV_PREFIX = "DICTAMESH_CONNECTOR_"

# Looks up a secret: (instance name, field name) -> value or None.
SecretSource = Callable[[str, str], str | None]


class ConnectorConfig(BaseModel):
    """Fields every connector has; each connector subclasses this with its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(default="default", min_length=1, description="Catalog domain of records.")
    batch_size: int = Field(
        default=200, ge=1, le=10_000, description="Records per checkpoint (publish + commit)."
    )


C = TypeVar("C", bound=ConnectorConfig)


def env_secret(instance: str, field: str) -> str | None:
    """The environment variable of one secret field, or None."""
    return os.environ.get(env_var(instance, field))


def env_var(instance: str, field: str) -> str:
    return f"{ENV_PREFIX}{instance}_{field}".upper().replace("-", "_")


def secret_fields(config_class: type[BaseModel]) -> list[str]:
    return [
        name
        for name, info in config_class.model_fields.items()
        if info.annotation is SecretStr or info.annotation == (SecretStr | None)
    ]


def build_config(
    config_class: type[C],
    instance: str,
    values: Mapping[str, Any] | None = None,
    *,
    secrets: SecretSource | None = None,
) -> C:
    """Validate `values` (plus secrets from `secrets` or the environment) as `config_class`."""
    data = {k: v for k, v in (values or {}).items() if k != "connector"}
    lookups: list[SecretSource] = [secrets, env_secret] if secrets is not None else [env_secret]
    for name in secret_fields(config_class):
        if data.get(name) in (None, ""):
            for lookup in lookups:
                found = lookup(instance, name)
                if found:
                    data[name] = found
                    break
    try:
        return config_class.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, instance, config_class) from None


def config_error(exc: ValidationError, instance: str, config_class: type[BaseModel]) -> Exception:
    problems = []
    secret_names = set(secret_fields(config_class))
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(config)"
        shown = "" if where in secret_names else f" (value {problem.get('input')!r})"
        if problem["type"] == "missing":
            shown = ""
        if problem["type"] == "extra_forbidden":
            guess = did_you_mean(where, config_class.model_fields)
            hint = f"; did you mean {guess!r}?" if guess else ""
            problems.append(f"{where}: unknown field{hint}")
            continue
        problems.append(f"{where}: {problem['msg']}{shown}")
    first = str(exc.errors()[0]["loc"][0]) if exc.errors() and exc.errors()[0]["loc"] else ""
    hint = (
        f"set it in connectors.yaml under {instance!r}"
        + (
            f", or the environment variable {env_var(instance, first)}"
            if first in secret_names
            else ""
        )
        + "."
    )
    return ConnectorConfigError(
        f"Connector {instance!r} configuration is invalid: {'; '.join(problems)}.", remedy=hint
    )


def read_connectors_file(path: Path) -> dict[str, dict[str, Any]]:
    """The instances declared in a connectors file; an absent file declares none."""
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConnectorConfigError(
            f"{path} is not valid YAML: {exc}.", remedy="fix the file's syntax."
        ) from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ConnectorConfigError(
            f"{path} must map instance names to their settings.",
            remedy="write `name: {connector: TYPE, field: value, ...}` entries.",
        )
    return {str(k): dict(v) for k, v in document.items()}
