"""Helpers for tests that drive the workbench as a user would."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed `dictamesh` command as a user would."""
    return subprocess.run(
        [str(BIN / "dictamesh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# Debian's chromium, headless, offline: what every browser test launches.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless chromium (Playwright `Browser`); fails the test if none is installed."""
    executable = chromium_path()
    if executable is None:
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_for_port(
    port: int, *, timeout: float = 60.0, process: subprocess.Popen[str] | None = None
) -> None:
    """Return once something accepts TCP connections on the loopback port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"process exited with {process.returncode}: "
                f"{process.stdout.read() if process.stdout else ''}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_records(
    bootstrap: str,
    topic: str,
    match: Callable[[Any], bool],
    count: int = 1,
    timeout: float = 30.0,
) -> list[Any]:
    """The first `count` records of `topic` (every partition, from the start) that `match` takes."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tests-reader",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None and match(message):
                found.append(message)
        return found
    finally:
        consumer.close()


def raw_producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 16_000_000, "log_level": 0}
    )


def live_producers() -> set[int]:
    """The librdkafka producers alive in this process: each stays connected to its broker."""
    import gc

    from confluent_kafka import Producer

    gc.collect()
    # `type() is`, not isinstance: isinstance asks some objects for `__class__`, and torch's
    # deprecated module attributes warn when asked.
    return {id(o) for o in gc.get_objects() if type(o) is Producer}
