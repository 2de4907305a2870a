"""Import and export per environment as YAML, JSON or ``.env``.

YAML and JSON carry every level of one environment and round-trip::

    environment: prod
    values: {db.pool_size: 10}
    services:
      api:
        values: {db.pool_size: 20}
        components:
          worker: {values: {db.pool_size: 40}}
    secrets: [db.password]

Secret values are exported masked (and skipped on import) unless ``include_secrets`` is given,
which needs the ``secrets:read`` permission and audits each read. ``.env`` holds the effective
values of one place (environment, service, component), one ``NAME=VALUE`` per key, with the key
``db.pool_size`` named ``DB__POOL_SIZE``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from workbench.config.model import ConfigVersion, InvalidValueError, Proposal, Scope
from workbench.config.secrets import MASK
from workbench.config.store import validate_against
from workbench.errors import UnknownNameError

if TYPE_CHECKING:
    from workbench.config.store import Config

Format = Literal["yaml", "json", "env"]
FORMATS: tuple[str, ...] = ("yaml", "json", "env")
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def format_for(path: str | Path, given: str | None = None) -> Format:
    """The format named, or guessed from the file name (.yaml/.yml, .json, .env)."""
    if given:
        if given not in FORMATS:
            raise UnknownNameError("format", given, FORMATS)
        return given  # type: ignore[return-value]
    name = Path(path).name.lower()
    if name.endswith((".yaml", ".yml")):
        return "yaml"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".env") or name.startswith(".env"):
        return "env"
    raise UnknownNameError("format", Path(path).suffix or name, FORMATS)


def env_name(key: str) -> str:
    """``db.pool-size`` -> ``DB__POOL_SIZE``."""
    return key.replace(".", "__").replace("/", "__").replace("-", "_").upper()


def key_from_env_name(name: str, known: list[str]) -> str:
    """The defined key an env name stands for, else the name lower-cased with ``__`` as ``.``."""
    for key in known:
        if env_name(key) == name:
            return key
    return name.lower().replace("__", ".")


def encode_env_value(value: Any) -> str:
    """One value as the text after ``NAME=``: JSON, except plain words stay unquoted."""
    if not isinstance(value, str):
        return json.dumps(value)
    plain = bool(value) and not re.search(r"[\s#'\"$\\=]", value) and value.isprintable()
    if plain:
        try:
            json.loads(value)  # would read back as a number, boolean, null...
        except json.JSONDecodeError:
            return value
    return json.dumps(value)  # quoted, every special character escaped, ASCII only


def decode_env_value(raw: str, *, as_text: bool = False) -> Any:
    """The inverse of `encode_env_value`; ``'...'`` is literal text. ValueError on bad quotes."""
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if raw[:1] == '"':
        value = json.loads(raw)
        if not isinstance(value, str):
            raise ValueError("a double-quoted value must be one JSON string")
        return value
    if as_text:
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


# -- export --------------------------------------------------------------------------------


def export(
    config: Config,
    environment: str,
    *,
    service: str | None = None,
    component: str | None = None,
    fmt: Format = "yaml",
    include_secrets: bool = False,
) -> str:
    if fmt == "env":
        return _export_env(config, environment, service, component, include_secrets)
    frame = config.values(environment)
    if service is not None:
        frame = frame.filter((frame["service"] == "") | (frame["service"] == service))
    document: dict[str, Any] = {"environment": environment, "values": {}}
    secrets: list[str] = []
    for row in frame.iter_rows(named=True):
        is_secret = row["kind"] == "secret"
        value = json.loads(row["value"])
        if is_secret:
            secrets.append(row["key"])
            if include_secrets:
                value = config.reveal(
                    row["key"],
                    environment=environment,
                    service=row["service"] or None,
                    component=row["component"] or None,
                )
        if not row["service"]:
            target = document["values"]
        elif not row["component"]:
            target = (
                document.setdefault("services", {})
                .setdefault(row["service"], {})
                .setdefault("values", {})
            )
        else:
            target = (
                document.setdefault("services", {})
                .setdefault(row["service"], {})
                .setdefault("components", {})
                .setdefault(row["component"], {})
                .setdefault("values", {})
            )
        target[row["key"]] = value
    if secrets:
        document["secrets"] = sorted(set(secrets))
    if fmt == "json":
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True)


def _export_env(
    config: Config,
    environment: str,
    service: str | None,
    component: str | None,
    include_secrets: bool,
) -> str:
    snapshot = config.snapshot(environment, service, component)
    lines = [f"# DictaMesh configuration: {Scope(environment, service or '', component or '')}"]
    for key, shown in snapshot.items():
        value = shown
        if shown == MASK and include_secrets:
            info = config.key_info(key)
            if info is not None and info.is_secret:
                value = config.reveal(
                    key, environment=environment, service=service, component=component
                )
        lines.append(f"{env_name(key)}={encode_env_value(value)}")
    return "\n".join(lines) + "\n"


# -- import --------------------------------------------------------------------------------


@dataclass
class PlannedChange:
    scope: Scope
    key: str
    value: Any = field(repr=False)
    status: str  # added | changed | unchanged | skipped
    is_secret: bool = False


@dataclass
class ImportResult:
    environment: str
    changes: list[PlannedChange]
    applied: list[ConfigVersion | Proposal] = field(default_factory=list)
    dry_run: bool = False

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.status] = counts.get(change.status, 0) + 1
        return counts

    def __repr__(self) -> str:
        return f"ImportResult({self.environment}, {self.counts}, dry_run={self.dry_run})"


def _parse_document(text: str, fmt: Format, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise InvalidValueError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            key="(file)",
            rule="json",
            remedy="fix the file; nothing was applied.",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InvalidValueError(
            f"{source} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.",
            key="(file)",
            rule="yaml",
            remedy="fix the file; nothing was applied.",
        ) from None
    if not isinstance(data, dict):
        raise InvalidValueError(
            f"{source} must hold a mapping with 'values' and/or 'services', not "
            f"{type(data).__name__}.",
            key="(file)",
            rule="structure",
            remedy="see docs/config.md for the layout.",
        )
    return data


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidValueError(
            f"{where} must be a mapping of key: value, not {type(value).__name__}.",
            key="(file)",
            rule="structure",
            remedy="see docs/config.md for the layout.",
        )
    return value


def _entries(document: dict[str, Any], environment: str) -> list[tuple[Scope, str, Any]]:
    entries = [
        (Scope(environment), k, v) for k, v in _mapping(document.get("values"), "values").items()
    ]
    for service, raw_body in _mapping(document.get("services"), "services").items():
        body = _mapping(raw_body, f"services.{service}")
        for key, value in _mapping(body.get("values"), f"services.{service}.values").items():
            entries.append((Scope(environment, str(service)), key, value))
        for comp, comp_body in _mapping(
            body.get("components"), f"services.{service}.components"
        ).items():
            where = f"services.{service}.components.{comp}"
            for key, value in _mapping(_mapping(comp_body, where).get("values"), where).items():
                entries.append((Scope(environment, str(service), str(comp)), key, value))
    return entries


def _parse_env(
    text: str, source: str, scope: Scope, config: Config
) -> list[tuple[Scope, str, Any]]:
    known = config.keys()["key"].to_list()
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise InvalidValueError(
                f"{source} line {number} is not NAME=VALUE.",
                key="(file)",
                rule="env",
                remedy="fix the line; nothing was applied.",
            )
        name, raw = match.groups()
        key = key_from_env_name(name, known)
        info = config.key_info(key)
        wants_string = bool(info and info.schema and info.schema.get("type") == "string")
        try:
            value = decode_env_value(
                raw, as_text=wants_string or (info is not None and info.is_secret)
            )
        except ValueError:
            raise InvalidValueError(
                f"{source} line {number}: the quoted value of {name} is not closed or "
                "has a bad escape.",
                key=key,
                rule="env",
                remedy="fix the quoting; nothing was applied.",
            ) from None
        entries.append((scope, key, value))
    return entries


def import_text(  # noqa: PLR0912 - one linear validation pass
    config: Config,
    text: str,
    *,
    fmt: Format,
    environment: str | None = None,
    service: str | None = None,
    component: str | None = None,
    dry_run: bool = False,
    reason: str = "",
    source: str = "the input",
) -> ImportResult:
    """Validate every value first; then apply all in one transaction (nothing on any error)."""
    secret_keys: set[str] = set()
    if fmt == "env":
        if environment is None:
            raise InvalidValueError(
                "A .env import needs an environment.",
                key="(file)",
                rule="env",
                remedy="pass --env NAME (and --service/--component for the level).",
            )
        scope = Scope(environment, service or "", component or "")
        entries = _parse_env(text, source, scope, config)
    else:
        document = _parse_document(text, fmt, source)
        target = environment or document.get("environment")
        if not isinstance(target, str) or not target:
            raise InvalidValueError(
                f"{source} names no environment.",
                key="(file)",
                rule="structure",
                remedy="add 'environment: NAME' or pass --env NAME.",
            )
        environment = target
        entries = _entries(document, environment)
        secret_keys = {str(k) for k in document.get("secrets") or []}
        if service is not None:
            entries = [e for e in entries if e[0].service in ("", service)]
    known_envs = config.environments()
    if environment not in known_envs:
        raise UnknownNameError("environment", environment, known_envs)
    current = {
        (r["service"], r["component"], r["key"]): r
        for r in config.values(environment).iter_rows(named=True)
    }
    planned: list[PlannedChange] = []
    for scope, key, value in entries:
        info = config.key_info(key)
        is_secret = bool(info and info.is_secret) or key in secret_keys
        config._check_key(key)
        existing = current.get((scope.service, scope.component, key))
        if is_secret and value == MASK:
            planned.append(PlannedChange(scope, key, value, "skipped", True))
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidValueError(
                f"{source}: the value of {key!r} in {scope} is not JSON.",
                key=key,
                rule="json",
                remedy="fix the file; nothing was applied.",
            ) from None
        validate_against(key, info.schema if info else None, value, scope, secret=is_secret)
        if existing is None:
            status = "added"
        elif not is_secret and json.loads(existing["value"]) == value:
            status = "unchanged"
        else:
            status = "changed"
        planned.append(PlannedChange(scope, key, value, status, is_secret))
    result = ImportResult(environment, planned, dry_run=dry_run)
    if dry_run:
        return result
    todo = [(c.scope, c.key, c.value) for c in planned if c.status in ("added", "changed")]
    if todo:
        result.applied = config.apply_many(
            todo,
            reason=reason or f"import from {source}",
            action="import",
            secrets={c.key for c in planned if c.is_secret},
        )
    return result


def import_file(
    config: Config, path: str | Path, *, fmt: str | None = None, **kwargs: Any
) -> ImportResult:
    path = Path(path)
    return import_text(
        config,
        path.read_text(encoding="utf-8"),
        fmt=format_for(path, fmt),
        source=str(path),
        **kwargs,
    )
