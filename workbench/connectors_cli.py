"""`dictamesh connectors ...`, `dictamesh sync NAME` and `dictamesh scaffold connector NAME`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli_support import handles_errors

if TYPE_CHECKING:
    from workbench.client import Workbench

out = Console()
err = Console(stderr=True)

connectors_app = typer.Typer(
    help="Installed connectors, configured instances, their runs.", no_args_is_help=True
)
scaffold_app = typer.Typer(help="Generate new packages from templates.", no_args_is_help=True)

F = TypeVar("F", bound=Callable[..., Any])


def _workbench() -> Workbench:
    from workbench.client import connect
    from workbench.observability import configure_logging
    from workbench.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    return connect(settings)


@connectors_app.command("list")
@handles_errors
def connectors_list(
    health: Annotated[
        bool, typer.Option("--health/--no-health", help="Probe each configured instance.")
    ] = False,
) -> None:
    """Installed connectors (name, version, capabilities) and configured instances."""
    from connectors.base.registry import installed

    table = Table("connector", "version", "capabilities", "description")
    for info in installed():
        table.add_row(info.name, info.version, ", ".join(info.capabilities), info.description)
    out.print(table)
    if not health:
        return
    workbench = _workbench()
    try:
        status = workbench.connectors.status(check_health=True)
    finally:
        workbench.close()
    instances = Table("instance", "connector", "health", "last sync", "records", "error")
    for row in status.iter_rows(named=True):
        instances.add_row(
            row["instance"],
            row["connector"],
            row["health"],
            f"{row['last_status'] or '-'} {row['last_finished'] or ''}",
            str(row["records_read"] or 0),
            (row["error"] or "")[:80],
        )
    out.print(instances)


@connectors_app.command("runs")
@handles_errors
def connectors_runs(
    name: Annotated[str | None, typer.Argument(help="Instance; all when omitted.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
) -> None:
    """The newest sync runs: status, records read/published/deleted, errors."""
    workbench = _workbench()
    try:
        frame = workbench.connectors.runs(name, limit=limit)
    finally:
        workbench.close()
    table = Table("instance", "mode", "status", "read", "published", "deleted", "started", "error")
    for row in frame.iter_rows(named=True):
        table.add_row(
            row["instance"],
            row["mode"],
            row["status"],
            str(row["records_read"]),
            str(row["records_published"]),
            str(row["records_deleted"]),
            str(row["started_at"]),
            (row["error"] or "")[:80],
        )
    out.print(table)


@connectors_app.command("demo")
@handles_errors
def connectors_demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated organisation.")] = 7,
    conversations: Annotated[int, typer.Option(help="How many conversations.")] = 60,
    instance: Annotated[str, typer.Option(help="Instance (source_system) name.")] = "chatwoot",
) -> None:
    """Load the demo support organisation through the Chatwoot connector, from a local
    Chatwoot sandbox, and wait until the catalog has applied it."""
    import secrets

    from connectors.chatwoot.sandbox import ChatwootSandbox, generate
    from workbench.events.producer import wait_for_all
    from workbench.events.workers import Workers, build_runners

    token = secrets.token_hex(16)
    workbench = _workbench()
    try:
        with ChatwootSandbox(generate(seed, conversations), token=token) as url:
            handle = workbench.connectors.add(
                instance,
                connector="chatwoot",
                base_url=url,
                account_id=1,
                api_access_token=token,
                domain="support",
            )
            result = handle.sync(full=True)
        workers = Workers(build_runners(workbench.endpoints, ["catalog"])).start()
        try:
            wait_for_all(result.handles, timeout=300)
        finally:
            workers.stop()
        counts = workbench.counts()
    finally:
        workbench.close()
    out.print(
        f"demo loaded through the {instance!r} Chatwoot connector: read {result.records_read}, "
        f"published {result.records_published}; catalog has {counts['entities']} entities, "
        f"{counts['relationships']} relationships",
        highlight=False,
    )


@handles_errors
def sync_command(
    name: Annotated[str, typer.Argument(help="Connector instance (or installed type).")],
    full: Annotated[
        bool, typer.Option("--full", help="Read everything and detect deletions.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Also run the catalog projection until it has applied all."),
    ] = False,
) -> None:
    """Sync connector instance NAME into the pipeline; resumes a killed or failed run."""
    workbench = _workbench()
    try:
        result = workbench.connectors[name].sync(full=full)
        if wait and result.handles:
            from workbench.events.producer import wait_for_all
            from workbench.events.workers import Workers, build_runners

            workers = Workers(build_runners(workbench.endpoints, ["catalog"])).start()
            try:
                wait_for_all(result.handles, timeout=300)
            finally:
                workers.stop()
    finally:
        workbench.close()
    out.print(
        f"{result.instance}: {result.mode} sync {result.status}"
        f"{' (resumed)' if result.resumed else ''}; read {result.records_read}, "
        f"published {result.records_published}, deleted {result.records_deleted} "
        f"in {result.seconds:.1f} s",
        highlight=False,
    )


@scaffold_app.command("connector")
@handles_errors
def scaffold_connector(
    name: Annotated[str, typer.Argument(help="Connector name, e.g. acme_crm.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the package directory.")
    ] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a connector package (code, entry point, tests that pass as generated)."""
    from connectors.base.scaffold import scaffold

    written = scaffold(name, directory, force=force)
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    out.print(
        f"next: pip install -e {written[0].parent} && pytest {written[0].parent / 'tests'}",
        highlight=False,
    )
