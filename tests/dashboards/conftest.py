"""Fixtures for dashboard pages built and served against the session's real stack."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import panel as pn
import psycopg
import pytest

from tests.dashboards.support import unique
from tests.helpers import chromium, free_port, wait_for_port
from workbench.settings import Settings


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[], Any]], str]]:
    """Serve a page built by a function, in this process; returns its address."""
    servers: list[Any] = []

    def start(build: Callable[[], Any]) -> str:
        port = free_port()
        servers.append(
            pn.serve(
                {"page": build},
                port=port,
                address="127.0.0.1",
                show=False,
                threaded=True,
                start=True,
            )
        )
        wait_for_port(port)
        return f"http://127.0.0.1:{port}/page"

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def chromium_page() -> Iterator[Any]:
    """A fresh page in Debian's chromium."""
    with chromium() as browser:
        yield browser.new_page()


def _server(workbench: Any) -> str:
    """The session's Postgres server, without a database name."""
    return str(workbench.endpoints.postgres_url).rsplit("/", 1)[0]


@pytest.fixture(scope="session")
def catalog_template(workbench: Any) -> Iterator[str]:
    """A migrated, empty catalog database on the session's server, copied by `catalog_db`."""
    from workbench import db

    name = f"dashboards_template_{unique()}"
    with psycopg.connect(_server(workbench) + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(f"{_server(workbench)}/{name}")
    db.migrate_up(engine)
    engine.dispose()  # a template must have no connections when it is copied
    yield name
    with psycopg.connect(_server(workbench) + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def catalog_db(workbench: Any, catalog_template: str) -> Iterator[str]:
    """The URL of a catalog database of this test's own, on the session's real Postgres.

    A page reading it sees only the rows the test wrote, and a test may break its tables
    without touching what other tests read.
    """
    name = f"dashboards_{unique()}"
    with psycopg.connect(_server(workbench) + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{catalog_template}"')
    yield f"{_server(workbench)}/{name}"
    with psycopg.connect(_server(workbench) + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def workbench_with(workbench: Any, settings: Settings) -> Iterator[Callable[..., Any]]:
    """Make a Workbench on the session's stack with some endpoints changed; closed after."""
    from workbench.client import Workbench

    made: list[Workbench] = []

    def make(**endpoints: str) -> Workbench:
        made.append(Workbench(settings, dataclasses.replace(workbench.endpoints, **endpoints)))
        return made[-1]

    yield make
    for wb in made:
        wb.close()
