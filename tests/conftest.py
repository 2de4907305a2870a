"""Shared fixtures: one embedded stack per test session, in a temporary DICTAMESH_HOME."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.settings import Settings, load_settings
from workbench.stack import Endpoints, Stack

# Tests run against the embedded stack only; a developer's own settings must not leak in.
for _name in list(os.environ):
    if _name.startswith("DICTAMESH_"):
        del os.environ[_name]


@pytest.fixture(scope="session")
def stack_home() -> Iterator[Path]:
    # Outside pytest's own temporary root: every pytest run (a nested one too) resets that root
    # to mode 0700, which would lock the database server's unprivileged user out mid-session.
    home = Path(tempfile.mkdtemp(prefix="dictamesh-tests-"))
    os.environ["DICTAMESH_HOME"] = str(home)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(stack_home: Path) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Endpoints]:
    """The embedded stack, started once for the whole session and stopped at its end."""
    embedded = Stack(settings)
    try:
        yield embedded.up()
    finally:
        gc.collect()  # Kafka clients of finished tests disconnect before their broker goes
        embedded.down()


@pytest.fixture(scope="session")
def workbench(stack: Endpoints, settings: Settings) -> Iterator[object]:
    from workbench.client import connect

    wb = connect(settings)
    yield wb
    wb.close()


@pytest.fixture(scope="session")
def workers(workbench: object) -> Iterator[object]:
    """Every registered projector, consuming in background threads for the whole session."""
    from workbench.events.workers import Workers, build_runners

    running = Workers(build_runners(workbench.endpoints)).start()  # type: ignore[attr-defined]
    yield running
    running.stop()
