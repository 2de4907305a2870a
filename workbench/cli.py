"""The `dictamesh` command line."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from workbench import __version__
from workbench.billing.cli import billing_app
from workbench.cli_support import err, handles_errors, out
from workbench.config.cli import app as config_app
from workbench.connectors_cli import connectors_app, scaffold_app, sync_command
from workbench.search.cli import search_app
from workbench.settings import Settings, load_settings

if TYPE_CHECKING:
    from workbench.stack import ComponentStatus, Endpoints, Stack


app = typer.Typer(
    name="dictamesh",
    help="DictaMesh Workbench: catalog, pipeline and analytics for a data mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
migrate_app = typer.Typer(
    help="Apply, revert and inspect catalog schema migrations.", no_args_is_help=True
)
report_app = typer.Typer(help="Run parameterized notebook reports.", no_args_is_help=True)
app.add_typer(migrate_app, name="migrate")
app.add_typer(report_app, name="report")
app.add_typer(config_app, name="config")
app.add_typer(search_app, name="search")
app.add_typer(connectors_app, name="connectors")
app.add_typer(scaffold_app, name="scaffold")
app.add_typer(billing_app, name="billing")
app.command("sync")(sync_command)


def _settings() -> Settings:
    settings = load_settings()
    from workbench.observability import configure_logging

    configure_logging(settings)
    return settings


# -- stack ---------------------------------------------------------------------------------


@app.command()
@handles_errors
def up() -> None:
    """Start the embedded stack (idempotent) and wait until every component is healthy."""
    from workbench.stack import Stack

    stack = Stack(_settings())
    stack.up()
    _print_status(stack)


@app.command()
@handles_errors
def down() -> None:
    """Stop the embedded stack; no process is left behind."""
    from workbench.stack import Stack

    for name, outcome in Stack(_settings()).down().items():
        out.print(f"{name}: {outcome}")


@app.command()
@handles_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Component, URL, pid, health and version of each part of the stack."""
    from workbench.stack import Stack

    stack = Stack(_settings())
    rows = _print_status(stack, as_json=as_json)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


def _print_status(stack: Stack, *, as_json: bool = False) -> list[ComponentStatus]:
    rows = stack.status()
    if as_json:
        out.print_json(json.dumps([row.__dict__ for row in rows], default=str))
        return rows
    table = Table("component", "url", "pid", "health", "version", "mode")
    table.columns[1].overflow = "fold"
    for row in rows:
        health = "[green]healthy[/]" if row.healthy else f"[red]unhealthy[/] {row.detail}"
        table.add_row(
            row.name,
            row.url,
            str(row.pid or "-"),
            health,
            row.version or "-",
            "embedded" if row.embedded else "external",
        )
    out.print(table)
    return rows


# -- migrations ----------------------------------------------------------------------------


def _engine() -> Any:
    from workbench import db
    from workbench.stack import Stack

    return db.make_engine(Stack(_settings()).endpoints().postgres_url)


@migrate_app.command("up")
@handles_errors
def migrate_up(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: newest)."""
    from workbench import db

    engine = _engine()
    db.migrate_up(engine, revision)
    out.print(f"catalog schema at revision {db.current_revision(engine)}")


@migrate_app.command("down")
@handles_errors
def migrate_down(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' for none.")] = "-1",
) -> None:
    """Revert migrations down to REVISION (default: one step)."""
    from workbench import db

    engine = _engine()
    db.migrate_down(engine, revision)
    out.print(f"catalog schema at revision {db.current_revision(engine) or 'base'}")


@migrate_app.command("status")
@handles_errors
def migrate_status() -> None:
    """The applied revision and whether it is the newest."""
    from workbench import db

    engine = _engine()
    history = db.migration_history(engine)
    current = db.current_revision(engine)
    head = next((r.revision for r in history if r.is_head), None)
    state = "up to date" if current == head else f"behind (newest is {head})"
    out.print(f"current: {current or 'base'} — {state}")
    if current != head:
        raise typer.Exit(1)


@migrate_app.command("history")
@handles_errors
def migrate_history() -> None:
    """Every revision, oldest first."""
    from workbench import db

    table = Table("revision", "down", "message", "state")
    for rev in db.migration_history(_engine()):
        marks = [m for m, on in (("current", rev.is_current), ("head", rev.is_head)) if on]
        table.add_row(rev.revision, rev.down_revision or "-", rev.message, ", ".join(marks))
    out.print(table)


# -- dashboards ----------------------------------------------------------------------------


@app.command()
@handles_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Generate a demo login when none is configured.")
    ] = False,
    consumers: Annotated[
        bool, typer.Option(help="Run the projectors as background workers in this process.")
    ] = True,
) -> None:
    """Serve the dashboards, /metrics and /api/health behind a login."""
    import signal
    import threading

    from workbench.api.auth import load_credentials
    from workbench.api.server import serve as run_server
    from workbench.client import connect
    from workbench.events.workers import Workers, build_runners

    settings = _settings()
    load_credentials(settings, demo=demo)  # refuse before starting anything
    workbench = connect(settings)
    # From here a SIGTERM stops everything cleanly, even before the server's loop runs.
    stop_requested = threading.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: stop_requested.set())
    workers = (
        Workers(build_runners(workbench.endpoints, batch_size=settings.consumer_batch_size)).start()
        if consumers
        else None
    )

    def announce(url: str, credentials: Any) -> None:
        out.print(f"DictaMesh Workbench dashboards: [bold]{url}[/]", highlight=False)
        if credentials.demo:
            login = next(iter(credentials.users.items()))
            out.print(
                f"demo login: user [bold]{login[0]}[/] password [bold]{login[1]}[/]",
                highlight=False,
            )
        sys.stdout.flush()

    try:
        run_server(
            settings,
            workbench,
            host=host or settings.serve_host,
            port=port or settings.serve_port,
            demo=demo,
            announce=announce,
            on_stop=workers.stop if workers is not None else None,  # each finishes its batch
            stop_requested=stop_requested,
        )
    finally:
        # Events the dashboards queued (a replay, a registration) are delivered before exit.
        workbench.close()


# -- the pipeline --------------------------------------------------------------------------


@app.command()
@handles_errors
def consume(
    sink: Annotated[
        list[str] | None, typer.Option("--sink", help="Only these sinks (default: all).")
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run this many processes of the same consumer groups (about one per core); "
            "the partitions are shared out between them.",
        ),
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="Consumers of each group in each process, in threads with a Postgres "
            "connection each (a batch commits on one connection, so a second one lets "
            "Postgres use another core).",
        ),
    ] = 1,
    supervised: Annotated[bool, typer.Option("--supervised", hidden=True)] = False,
) -> None:
    """Run every projector (consumer group) until SIGTERM or Ctrl-C."""
    from workbench.events.consumer import ConsumerRunner, collect_garbage_between_batches
    from workbench.events.topics import ensure_topics
    from workbench.events.workers import build_runners
    from workbench.stack import ensure_up

    settings = _settings()
    endpoints = ensure_up(settings)
    if processes > 1:
        _supervise_consumers(endpoints, sink or [], processes, threads)
        return
    if not supervised:
        ensure_topics(endpoints.kafka_bootstrap)
    runners = build_runners(
        endpoints,
        sink,
        threads=threads,
        batch_size=settings.consumer_batch_size,
        reset_empty_group=not supervised,  # the supervisor did it once for all its processes
    )
    import signal
    import threading

    from workbench.events.workers import Workers

    stop = threading.Event()

    def stop_all(*_: Any) -> None:
        stop.set()
        for runner in runners:
            runner.stop()

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    if supervised and not (_supervisor_says_go() and not stop.is_set()):
        return
    # The broker takes a while to form a group: join first, bring the schema up meanwhile
    # (a supervisor did that before saying go).
    for runner in runners:
        if isinstance(runner, ConsumerRunner):
            runner.join_group()
    if not supervised:
        _migrate_catalog(endpoints)
    collect_garbage_between_batches()
    if len(runners) == 1:
        runners[0].run()  # in the main thread, until SIGTERM
        return
    workers = Workers(runners, on_crash=stop.set).start()
    stop.wait()
    workers.stop()
    if workers.crashed:
        err.print(f"[bold red]error[/]: {', '.join(workers.crashed)} crashed; the log says why.")
        raise typer.Exit(1)


def _migrate_catalog(endpoints: Endpoints) -> None:
    from workbench import db

    engine = db.make_engine(endpoints.postgres_url)
    try:
        db.migrate_up(engine)
    finally:
        engine.dispose()


_GO = "go"


def _supervisor_says_go() -> bool:
    """A supervised process waits, imported and connected, until the topics, schema and groups
    are ready; False when the supervisor went away (or was stopped) before that."""
    import sys

    try:
        return sys.stdin.readline().strip() == _GO
    except (OSError, ValueError):
        return False


def _say(child: Any, word: str | None) -> None:
    """Write `word` to a supervised process's standard input and close it (once)."""
    if child.stdin is None or child.stdin.closed:
        return
    try:
        if word is not None:
            child.stdin.write(word + "\n")
        child.stdin.close()
    except OSError:  # it already exited
        pass


def _supervise_consumers(
    endpoints: Endpoints, sinks: list[str], processes: int, threads: int
) -> None:
    """Start `processes` single-process consumers and stop them all on SIGTERM or Ctrl-C.

    One Python process applies a batch at a time; several share a group's partitions, so the
    decoding work spreads over the cores while each partition keeps its order. The processes
    start (a second of imports) while this one creates the topics, brings the schema up and
    resets empty groups; they join their groups once it says go on their standard input.
    """
    import signal
    import subprocess
    import sys
    import threading

    from workbench.events.consumer import forget_empty_group
    from workbench.events.topics import ensure_topics
    from workbench.events.workers import discover_sinks

    command = [sys.executable, "-c", "from workbench.cli import main; main()", "consume"]
    for name in sinks:
        command += ["--sink", name]
    command += ["--threads", str(threads), "--supervised"]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        ensure_topics(endpoints.kafka_bootstrap)
        _migrate_catalog(endpoints)
        found = discover_sinks()
        for name in sinks or found:
            if name in found:
                forget_empty_group(endpoints.kafka_bootstrap, found[name].load()().group)
        for child in children:
            _say(child, _GO)
        while not stop.wait(0.5):
            if any(child.poll() is not None for child in children):
                break  # one died: stop the others rather than run short-handed
    finally:
        for child in children:
            _say(child, None)  # one still waiting reads end-of-file and exits
            if child.poll() is None:
                child.terminate()
        codes = [child.wait(60) for child in children]
    if any(code not in (0, -signal.SIGTERM) for code in codes):
        raise typer.Exit(1)


# -- reports -------------------------------------------------------------------------------


@report_app.command("list")
@handles_errors
def report_list() -> None:
    """The available reports and their parameters."""
    from workbench.reports import available_reports, report_parameters

    table = Table("report", "parameters")
    for name in available_reports():
        params = report_parameters(name)
        table.add_row(name, ", ".join(f"{k}={v['default']}" for k, v in params.items()))
    out.print(table)


@report_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@handles_errors
def report_run(ctx: typer.Context, name: str) -> None:
    """Run report NAME with parameters given as `-p KEY VALUE` (repeatable)."""
    from workbench.reports import run_report

    result = run_report(_settings(), name, _parse_parameters(list(ctx.args)))
    out.print(f"notebook: {result.notebook}\nhtml: {result.html}", highlight=False)


def _parse_parameters(args: list[str]) -> dict[str, str]:
    """papermill's `-p KEY VALUE` pairs (also `--parameter KEY VALUE` and `-p KEY=VALUE`)."""
    parameters: dict[str, str] = {}
    position = 0
    while position < len(args):
        flag = args[position]
        if flag not in {"-p", "--parameter"}:
            raise typer.BadParameter(
                f"unexpected {flag!r}; give parameters as -p KEY VALUE", param_hint="-p"
            )
        rest = args[position + 1 : position + 3]
        if rest and "=" in rest[0]:
            key, _, value = rest[0].partition("=")
            position += 2
        elif len(rest) == 2:
            key, value = rest
            position += 3
        else:
            raise typer.BadParameter("-p needs a KEY and a VALUE", param_hint="-p")
        parameters[key] = value
    return parameters


@app.command()
def version() -> None:
    """The workbench version."""
    out.print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
