"""`dictamesh config ...`: read, change, compare, version, import/export configuration."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli_support import handles_errors
from workbench.errors import DictaMeshError

if TYPE_CHECKING:
    from workbench.config.store import Config

out = Console()
err = Console(stderr=True)
app = typer.Typer(
    help="Hierarchical configuration: values, secrets, versions, rollback, import/export.",
    no_args_is_help=True,
)
F = TypeVar("F", bound=Callable[..., Any])

Env = Annotated[str, typer.Option("--env", "-e", help="Environment, e.g. dev, staging, prod.")]
Service = Annotated[str | None, typer.Option("--service", "-s", help="Service level.")]
Component = Annotated[str | None, typer.Option("--component", "-c", help="Component level.")]
Reason = Annotated[str, typer.Option("--reason", "-m", help="Why (kept in the history).")]


def _config(*, system: bool = False) -> Config:
    from workbench.client import connect
    from workbench.config.model import Actor
    from workbench.observability import configure_logging
    from workbench.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    workbench = connect(settings)
    actor = Actor.local()
    if system:  # holds the master key itself: acts for the installation
        actor = Actor(actor.name, "system")
    return workbench.config.as_actor(actor.with_request())


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO time such as 2026-11-26T10:00:00+00:00", param_hint="--as-of"
        ) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter("give a timezone, e.g. 2026-11-26T10:00:00Z", param_hint="--as-of")
    return parsed


def _print_result(result: Any) -> None:
    from workbench.config.model import Proposal

    if isinstance(result, Proposal):
        out.print(
            f"proposed #{result.id} for {result.scope}:{result.key}; it applies once approved "
            f"(`dictamesh config approve {result.id}`)",
            highlight=False,
        )
        return
    out.print(
        f"version #{result.id}: {result.scope}:{result.key} ({result.action})", highlight=False
    )
    if result.diff:
        out.print(result.diff, highlight=False, markup=False)


@app.command("get")
@handles_errors
def get(
    key: str,
    env: Env,
    service: Service = None,
    component: Component = None,
    reveal: Annotated[
        bool, typer.Option(help="Show a secret (needs permission; audited).")
    ] = False,
    explain: Annotated[bool, typer.Option(help="Show every level and which one wins.")] = False,
    as_of: Annotated[str | None, typer.Option(help="The value at this ISO time.")] = None,
) -> None:
    """The value KEY has for the environment/service/component (most specific level wins)."""
    config = _config()
    when = _time(as_of)
    if explain:
        out.print(
            str(
                config.explain(
                    key, environment=env, service=service, component=component, as_of=when
                )
            ),
            highlight=False,
            markup=False,
        )
        return
    info = config.key_info(key)
    if info is not None and info.is_secret and not reveal:
        explanation = config.explain(
            key, environment=env, service=service, component=component, as_of=when
        )
        if explanation.winner is None:
            raise typer.Exit(1)
        out.print("•••••• (secret; --reveal shows it, audited)", highlight=False)
        return
    value = (
        config.reveal(key, environment=env, service=service, component=component, as_of=when)
        if reveal
        else config.get(key, environment=env, service=service, component=component, as_of=when)
    )
    out.print(json.dumps(value, ensure_ascii=False, indent=2), highlight=False, markup=False)


@app.command("set")
@handles_errors
def set_(
    key: str,
    value: Annotated[str, typer.Argument(help="A JSON value; '-' reads it from stdin.")],
    env: Env,
    service: Service = None,
    component: Component = None,
    reason: Reason = "",
    string: Annotated[bool, typer.Option("--string", help="Take VALUE as plain text.")] = False,
    secret: Annotated[bool, typer.Option(help="Store encrypted (first set of a key).")] = False,
    schema_file: Annotated[
        Path | None, typer.Option(help="A JSON Schema file for the key, applied first.")
    ] = None,
) -> None:
    """Set KEY to VALUE at the given level (a new version, or a proposal where approval is
    required). VALUE is JSON: 42, true, '"text"', '{"a": 1}'."""
    from workbench.config.store import parse_json_value

    config = _config()
    raw = sys.stdin.read().rstrip("\n") if value == "-" else value
    parsed = raw if string else parse_json_value(key, raw, secret=secret)
    if schema_file is not None:
        schema = parse_json_value(f"{key} (schema file)", schema_file.read_text())
        config.define(key, schema=schema, kind="secret" if secret else None)
    result = config.set(
        key,
        parsed,
        environment=env,
        service=service,
        component=component,
        reason=reason,
        secret=True if secret else None,
    )
    _print_result(result)


@app.command("diff")
@handles_errors
def diff(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Left environment.")] = None,
    to: Annotated[str | None, typer.Option(help="Right environment.")] = None,
    service: Service = None,
    component: Component = None,
    version: Annotated[int | None, typer.Option(help="Show the diff of one version.")] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Also list equal keys.")] = False,
) -> None:
    """Compare two environments' effective values (--env A --to B), or show a version's diff."""
    config = _config()
    if version is not None:
        _print_result(config.version(version))
        return
    if not env or not to:
        raise typer.BadParameter("give --env A --to B, or --version N", param_hint="--env/--to")
    frame = config.diff(env, to, service=service, component=component)
    table = Table("key", "status", env if env != to else "left", to if env != to else "right")
    changed = 0
    for row in frame.iter_rows():
        if row[1] == "same" and not all_keys:
            continue
        changed += row[1] != "same"
        table.add_row(*[str(c) if c is not None else "—" for c in row])
    out.print(table)
    out.print(f"{changed} difference(s)")


@app.command("history")
@handles_errors
def history(
    key: Annotated[str | None, typer.Argument(help="Only this key.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    service: Service = None,
    component: Component = None,
    limit: Annotated[int, typer.Option(help="At most this many versions.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Versions newest first, for a key, a service or an environment."""
    frame = _config().history(
        key, environment=env, service=service, component=component, limit=limit
    )
    if as_json:
        out.print_json(frame.drop("diff").write_json())
        return
    table = Table("version", "time", "scope", "key", "action", "old", "new", "author", "reason")
    for row in frame.iter_rows(named=True):
        scope = "/".join(p for p in (row["environment"], row["service"], row["component"]) if p)
        table.add_row(
            str(row["version"]),
            row["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            scope,
            row["key"],
            row["action"],
            row["old_value"] or "—",
            row["new_value"] or "—",
            f"{row['author']} ({row['author_type']})",
            row["reason"],
        )
    out.print(table)


@app.command("rollback")
@handles_errors
def rollback(
    key: Annotated[
        str | None, typer.Argument(help="The key; without it, every key of the level.")
    ] = None,
    to_version: Annotated[
        int | None, typer.Option(help="Restore the value after version N.")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Restore the value at this ISO time.")] = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="With --as-of.")] = None,
    service: Service = None,
    component: Component = None,
    reason: Reason = "",
) -> None:
    """Restore an earlier value of KEY as a new version; without KEY, restore every key of the
    level (--env, --service, --component) to its value --as-of a time, in one transaction."""
    if key is None:
        when = _time(as_of)
        if when is None or env is None:
            raise typer.BadParameter("without KEY give --env and --as-of", param_hint="--as-of")
        versions = _config().rollback_scope(
            environment=env, service=service, component=component, as_of=when, reason=reason
        )
        for version in versions:
            _print_result(version)
        out.print(f"restored {len(versions)} key(s)")
        return
    result = _config().rollback(
        key,
        to_version=to_version,
        as_of=_time(as_of),
        environment=env,
        service=service,
        component=component,
        reason=reason,
    )
    _print_result(result)


def _print_plan(result: Any) -> None:
    table = Table("scope", "key", "status")
    for change in result.changes:
        table.add_row(str(change.scope), change.key, change.status)
    out.print(table)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items())) or "nothing"
    out.print(f"{result.environment}: {counts}", highlight=False)


@app.command("validate")
@handles_errors
def validate(
    file: Path,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Environment (.env files).")
    ] = None,
    service: Service = None,
    component: Component = None,
    fmt: Annotated[str | None, typer.Option("--format", help="yaml, json or env.")] = None,
) -> None:
    """Check a YAML/JSON/.env file against the keys' schemas without applying anything."""
    result = _config().import_file(
        str(file), fmt=fmt, environment=env, service=service, component=component, dry_run=True
    )
    _print_plan(result)
    out.print("valid: nothing applied")


@app.command("export")
@handles_errors
def export(
    env: Env,
    service: Service = None,
    component: Component = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml, json or env.")] = "yaml",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    include_secrets: Annotated[
        bool, typer.Option(help="Write secret values in clear (needs permission; audited).")
    ] = False,
) -> None:
    """One environment as YAML/JSON (every level) or one place's effective values as .env."""
    text = _config().export(
        env, service=service, component=component, fmt=fmt, include_secrets=include_secrets
    )
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    if include_secrets:
        output.chmod(0o600)
    out.print(f"wrote {output}", highlight=False)


@app.command("import")
@handles_errors
def import_(
    file: Path,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Environment (overrides the file's).")
    ] = None,
    service: Service = None,
    component: Component = None,
    fmt: Annotated[str | None, typer.Option("--format", help="yaml, json or env.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; apply nothing.")] = False,
    reason: Reason = "",
) -> None:
    """Apply a YAML/JSON/.env file in one transaction: every value validated first."""
    result = _config().import_file(
        str(file),
        fmt=fmt,
        environment=env,
        service=service,
        component=component,
        dry_run=dry_run,
        reason=reason,
    )
    _print_plan(result)
    if dry_run:
        out.print("dry run: nothing applied")
    else:
        out.print(f"applied {len(result.applied)} change(s)")


@app.command("rotate-key")
@handles_errors
def rotate_key(
    generate: Annotated[
        bool, typer.Option(help="Create a new key in the master key file first (file source).")
    ] = False,
) -> None:
    """Re-wrap every secret's data key under the newest master key, in one transaction."""
    from workbench.config.secrets import (
        FileKeyProvider,
        generate_master_key,
        key_id,
        parse_master_key,
    )

    config = _config(system=True)
    provider = config._keys()
    if generate:
        if not isinstance(provider, FileKeyProvider):
            raise DictaMeshError(
                "--generate works with a master key file; this installation reads the key from "
                "DICTAMESH_MASTER_KEY.",
                remedy="put the new key first in DICTAMESH_MASTER_KEY (new,old), run rotate-key, "
                "then drop the old one.",
            )
        old_lines = (
            [
                line.strip()
                for line in provider.path.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
            if provider.path.exists()
            else []
        )
        new = generate_master_key()
        provider.write([new, *old_lines])  # both keys readable while re-wrapping
        count = config.rotate_master_key()
        provider.write([new])
        out.print(
            f"re-wrapped {count} data key(s) under {key_id(parse_master_key(new, where='new'))}; "
            f"{provider.path} now holds only the new key"
        )
        return
    count = config.rotate_master_key()
    out.print(f"re-wrapped {count} data key(s) under {key_id(provider.primary())}")


@app.command("proposals")
@handles_errors
def proposals(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
) -> None:
    """Changes awaiting approval."""
    table = Table("id", "scope", "key", "by", "reason", "diff")
    for row in _config().proposals(environment=env).iter_rows(named=True):
        scope = "/".join(p for p in (row["environment"], row["service"], row["component"]) if p)
        table.add_row(
            str(row["id"]), scope, row["key"], row["proposed_by"], row["reason"], row["diff"]
        )
    out.print(table)


@app.command("approve")
@handles_errors
def approve(
    proposal_id: int, comment: Annotated[str, typer.Option(help="Review note.")] = ""
) -> None:
    """Approve proposal ID and apply it (needs the 'approve' permission; not its author)."""
    result = _config().approve(proposal_id, comment=comment)
    out.print(f"proposal #{result.id} {result.status} as version #{result.applied_version_id}")


@app.command("reject")
@handles_errors
def reject(
    proposal_id: int, comment: Annotated[str, typer.Option(help="Review note.")] = ""
) -> None:
    """Reject proposal ID; nothing is applied."""
    result = _config().reject(proposal_id, comment=comment)
    out.print(f"proposal #{result.id} {result.status}")
