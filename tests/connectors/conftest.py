"""Fixtures of the connector tests: a scripted local HTTP server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.connectors.server import ScriptedServer, serve
from tests.helpers import REPO, SHARED_DATA, free_port, wait_for_port


@pytest.fixture
def http_server() -> Iterator[ScriptedServer]:
    with serve(ScriptedServer()) as server:
        yield server


# -- Chatwoot's official OpenAPI spec, served by a request-validating mock -------------------


CHATWOOT_SPECS = SHARED_DATA / "chatwoot"
PRISM = REPO / "node_modules" / ".bin" / "prism"


@dataclass
class Prism:
    url: str
    log: Path
    process: subprocess.Popen[bytes]
    violations: list[str] = field(default_factory=list)

    def log_violations(self) -> list[str]:
        """Request violations prism reported in its log."""
        return [
            line
            for line in self.log.read_text(errors="replace").splitlines()
            if "Violation: request" in line
        ]


def ensure_prism() -> Path:
    """`@stoplight/prism-cli` from package.json, installed into node_modules when missing."""
    if PRISM.exists():
        return PRISM
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed; the Chatwoot conformance tests need node and npm")
    command = [npm, "ci" if (REPO / "package-lock.json").exists() else "install"]
    installed = subprocess.run(
        [*command, "--no-audit", "--no-fund"], cwd=REPO, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return PRISM


@pytest.fixture(scope="session")
def chatwoot_spec() -> Path:
    spec = CHATWOOT_SPECS / "swagger.json"
    if not spec.exists():
        pytest.skip(f"Chatwoot's OpenAPI spec {spec} is absent (it sits beside the repository)")
    return spec


@pytest.fixture(scope="session")
def prism(chatwoot_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    binary = ensure_prism()
    port = free_port()
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(binary),
                "mock",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--errors",
                str(chatwoot_spec),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=90)
        yield Prism(f"http://127.0.0.1:{port}", log, process)
    finally:
        process.terminate()
        process.wait(timeout=30)
