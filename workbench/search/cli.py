"""`dictamesh search`: query the index, add documents, backfill from the catalog.

``dictamesh search "QUERY"`` is short for ``dictamesh search query "QUERY"``; a query that is
itself a command name (``reindex``) needs the long form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from workbench.cli_support import handles_errors
from workbench.errors import UnknownNameError

if TYPE_CHECKING:
    from workbench.client import Workbench

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class _DefaultQueryGroup(TyperGroup):
    """Treat anything that is not a subcommand as the query of the `query` subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["query", *args]
        return super().parse_args(ctx, args)


search_app = typer.Typer(
    cls=_DefaultQueryGroup,
    help='Semantic, keyword and hybrid search: `dictamesh search "QUERY"`.',
    no_args_is_help=True,
)


def _connect() -> Workbench:
    from workbench.cli import _settings
    from workbench.client import connect

    return connect(_settings())


FORMATS = ("table", "json")


@search_app.command("query")
@handles_errors
def query(
    text: Annotated[str, typer.Argument(metavar="QUERY", help="What to search for.")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many hits.")] = 10,
    mode: Annotated[str, typer.Option("--mode", "-m", help="vector, keyword or hybrid.")] = (
        "hybrid"
    ),
    output: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    domain: Annotated[list[str] | None, typer.Option("--domain", help="Only this domain.")] = None,
    source_system: Annotated[
        list[str] | None, typer.Option("--source-system", help="Only this source system.")
    ] = None,
    entity_type: Annotated[
        list[str] | None, typer.Option("--entity-type", help="Only this entity type.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Must carry this tag.")] = None,
    since: Annotated[str | None, typer.Option(help="Updated at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Updated before (ISO 8601).")] = None,
) -> None:
    """Search the index; print a table or JSON lines of the hits."""
    if output not in FORMATS:
        raise UnknownNameError("output format", output, FORMATS)
    filters = {
        "domain": domain or None,
        "source_system": source_system or None,
        "entity_type": entity_type or None,
        "tags": tag or None,
        "since": since,
        "until": until,
    }
    workbench = _connect()
    hits = workbench.search(text, k=k, filters=filters, mode=mode)  # type: ignore[arg-type]
    if output == "json":
        rows = hits.drop("snippet_html").to_dicts()
        for row in rows:
            if row["updated_at"] is not None:
                row["updated_at"] = row["updated_at"].isoformat()
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from workbench.search.api import citation

    table = Table("#", "score", "source", "snippet", show_lines=False)
    for row in hits.iter_rows(named=True):
        snippet = re.sub(r"\*\*(.+?)\*\*", r"[bold yellow]\1[/]", _escape(row["snippet"]))
        table.add_row(str(row["rank"]), f"{row['score']:.4f}", _escape(citation(row)), snippet)
    out.print(table)
    if not len(hits):
        out.print("no hits")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text or "")


@search_app.command("reindex")
@handles_errors
def reindex(
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Entities per committed batch.")] = 200,
    bulk: Annotated[
        bool | None,
        typer.Option(
            "--bulk/--no-bulk",
            help="Drop the vector index for the load and build it once at the end "
            "(default: when at least 20,000 entities are to be indexed).",
        ),
    ] = None,
) -> None:
    """Backfill the index from the catalog; resumes an interrupted run."""
    from workbench.search.indexer import reindex as run_reindex

    workbench = _connect()
    result = run_reindex(workbench.search, restart=restart, batch_size=batch_size, bulk=bulk)
    state = "complete" if result.complete else "interrupted"
    resumed = " (resumed)" if result.resumed else ""
    out.print(
        f"reindex {state}{resumed}: {result.total} entities, {result.indexed} indexed, "
        f"{result.skipped} unchanged, {result.chunks} chunks, {result.removed} removed, "
        f"{result.seconds:.1f} s"
        + (
            f" (bulk load, vector index built in {result.index_build_seconds:.1f} s)"
            if result.bulk
            else ""
        ),
        highlight=False,
    )


@search_app.command("add")
@handles_errors
def add(
    paths: Annotated[list[Path], typer.Argument(help="Markdown, text or HTML files.")],
    domain: Annotated[str | None, typer.Option(help="Domain of the documents.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
) -> None:
    """Index files as free documents (key: the path); re-adding updates them."""
    workbench = _connect()
    for path in paths:
        stats = workbench.search.index(path, domain=domain, tags=tag or ())
        out.print(f"{path}: {stats.chunks} chunk(s){' (unchanged)' if stats.skipped else ''}")


@search_app.command("stats")
@handles_errors
def stats() -> None:
    """Documents, chunks and cached embeddings in the index."""
    typer.echo(json.dumps(_connect().search.stats()))
