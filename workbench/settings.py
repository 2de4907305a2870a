"""Settings: the only place DICTAMESH_* environment variables (and `.env`) are read.

Every component, URL and credential of the workbench comes from here. A component whose URL is
set (``DICTAMESH_POSTGRES_URL``, ``DICTAMESH_KAFKA_BOOTSTRAP``, ``DICTAMESH_REDIS_URL``) is treated
as external: nothing is started for it.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workbench.errors import SettingsError

ENV_PREFIX = "DICTAMESH_"

# The accepted form of each setting with a non-obvious syntax; quoted in error messages.
ACCEPTED_FORMS: dict[str, str] = {
    "home": "a directory path, e.g. ~/.dictamesh",
    "postgres_url": "postgresql://USER:PASSWORD@HOST:PORT/DBNAME",
    "kafka_bootstrap": "HOST:PORT[,HOST:PORT...], e.g. localhost:9092",
    "redis_url": "redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://...",
    "postgres_port": "a TCP port 1-65535, or 0 to pick a free one",
    "kafka_port": "a TCP port 1-65535, or 0 to pick a free one",
    "redis_port": "a TCP port 1-65535, or 0 to pick a free one",
    "serve_port": "a TCP port 1-65535",
    "master_key_source": "'env' (key in DICTAMESH_MASTER_KEY), 'file' (HOME/secrets/master.key)"
    " or 'file:PATH'",
    "dashboard_users": "USER:PASSWORD[,USER:PASSWORD...] (passwords of at least 8 characters)",
    "dashboard_auth": "'basic' or 'oauth'",
    "api_tokens": "TOKEN[,TOKEN...] (each at least 16 characters)",
    "serve_origins": "HOST:PORT[,HOST:PORT...] allowed to open dashboard websockets",
    "log_format": "'console' or 'json'",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}

_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:(\d{1,5})$")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Typed configuration of one workbench installation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(default=Path("~/.dictamesh"), description="Where all local state lives.")

    postgres_url: SecretStr | None = Field(default=None, description="External PostgreSQL.")
    kafka_bootstrap: str | None = Field(default=None, description="External Kafka brokers.")
    redis_url: SecretStr | None = Field(default=None, description="External Redis.")

    postgres_port: int = Field(default=0, ge=0, le=65535)
    kafka_port: int = Field(default=0, ge=0, le=65535)
    redis_port: int = Field(default=0, ge=0, le=65535)
    stack_start_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for health."
    )

    embedding_model: str = Field(default="all-MiniLM-L6-v2")
    lake_data_path: str | None = Field(
        default=None, description="Where DuckLake keeps Parquet files (default HOME/lake)."
    )
    lake_snapshot_retention_days: float = Field(
        default=7.0,
        ge=0,
        le=3650,
        description="Days of DuckLake snapshots (time travel) the analytics writer keeps.",
    )
    consumer_batch_size: int = Field(
        default=500, ge=1, le=100_000, description="Records a consumer applies per transaction."
    )
    consumer_session_timeout_ms: int | None = Field(
        default=None,
        ge=1000,
        le=3_600_000,
        description="Kafka group session timeout (default 2 s embedded, 6 s external).",
    )

    master_key_source: str = Field(default="file")
    master_key: SecretStr | None = Field(default=None, description="With master_key_source=env.")

    dashboard_auth: Literal["basic", "oauth"] = "basic"
    dashboard_users: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    oauth_provider: str | None = None
    oauth_key: str | None = None
    oauth_secret: SecretStr | None = None
    cookie_secret: SecretStr | None = None
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=5006, ge=1, le=65535)
    serve_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    billing_stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret of POST /billing/webhooks/stripe."
    )
    billing_config_environment: str = Field(
        default="prod", description="Configuration environment holding billing secrets."
    )

    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    otel_endpoint: str | None = None

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("postgres_url", mode="after")
    @classmethod
    def _check_postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in {"postgresql", "postgres", "postgresql+psycopg"} or not (
            parts.hostname or "host=" in parts.query
        ):
            raise ValueError("not a PostgreSQL URL")
        return value

    @field_validator("kafka_bootstrap", mode="after")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            match = _HOST_PORT.match(server.strip())
            if not match or not 0 < int(match.group(1)) < 65536:
                raise ValueError(f"{server.strip()!r} is not HOST:PORT")
        return value

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("not a Redis URL")
        return value

    @field_validator("master_key_source", mode="after")
    @classmethod
    def _check_master_key_source(cls, value: str) -> str:
        if value in {"env", "file"} or (value.startswith("file:") and len(value) > 5):
            return value
        raise ValueError("unknown master key source")

    @field_validator("dashboard_users", mode="before")
    @classmethod
    def _parse_users(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        users: dict[str, str] = {}
        for entry in _split_csv(value):
            user, sep, password = entry.partition(":")
            if not sep or not user or not password:
                raise ValueError(f"entry {user or entry!r} is not USER:PASSWORD")
            users[user] = password
        return users

    @field_validator("dashboard_users", mode="after")
    @classmethod
    def _check_passwords(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, password in value.items():
            if len(password.get_secret_value()) < 8:
                raise ValueError(f"the password of {user!r} is shorter than 8 characters")
        return value

    @field_validator("api_tokens", "serve_origins", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("api_tokens", mode="after")
    @classmethod
    def _check_tokens(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(token.get_secret_value()) < 16 for token in value):
            raise ValueError("a token is shorter than 16 characters")
        return value

    @cached_property
    def master_key_file(self) -> Path | None:
        """The file holding the master key, when the key comes from a file."""
        if self.master_key_source == "env":
            return None
        if self.master_key_source == "file":
            return self.home / "secrets" / "master.key"
        return Path(self.master_key_source.removeprefix("file:")).expanduser()

    def is_external(self, component: str) -> bool:
        """Whether a component is given by URL (and so must not be started)."""
        return {
            "postgres": self.postgres_url,
            "broker": self.kafka_bootstrap,
            "redis": self.redis_url,
        }[component] is not None


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation failures into one clear `SettingsError`.

    The message names each offending variable, its value (secrets masked) and the accepted form.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            shown = _shown_value(field, error.get("input"))
            form = ACCEPTED_FORMS.get(field)
            reason = str(error["msg"]).removeprefix("Value error, ")
            line = f"{env_name(field)}={shown}: {reason}"
            if form:
                line += f"; expected {form}"
            problems.append(line)
        raise SettingsError(
            "Invalid settings: " + "; ".join(problems) + ".",
            remedy="fix the variable(s) in the environment or in .env, then retry.",
        ) from None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``; safe for logs, reprs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _shown_value(field: str, value: Any) -> str:
    if field in {"postgres_url", "redis_url"} and isinstance(value, str):
        return repr(redact_url(value))
    if field in {
        "master_key",
        "dashboard_users",
        "oauth_secret",
        "cookie_secret",
        "api_tokens",
        "billing_stripe_webhook_secret",
    }:
        return "'***'"
    if isinstance(value, dict):
        return "<object>"
    return repr(value)
