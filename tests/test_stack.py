"""The embedded stack as users drive it: `dictamesh up | status | down` in a fresh home."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import run_cli
from workbench.settings import load_settings
from workbench.stack import Endpoints, Stack

pytestmark = pytest.mark.stack


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An empty DICTAMESH_HOME of its own; whatever a test starts there is stopped after it."""
    env = {"DICTAMESH_HOME": str(tmp_path / "home")}
    yield env
    run_cli("down", env=env)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie that only awaits its parent's reaping."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pids(home: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (home / "run").glob("*.pid")}


def test_up_status_down_round_trip_leaves_no_process(fresh_home: dict[str, str]) -> None:
    started = run_cli("up", env=fresh_home)
    assert started.returncode == 0, started.stderr
    home = Path(fresh_home["DICTAMESH_HOME"])
    pids = _pids(home)
    assert set(pids) == {"postgres", "broker", "redis"}
    # The servers outlive the CLI call that started them.
    assert all(_alive(pid) for pid in pids.values())

    status = run_cli("status", "--json", env=fresh_home)
    assert status.returncode == 0, status.stderr
    rows = {row["name"]: row for row in json.loads(status.stdout)}
    assert set(rows) == {"postgres", "broker", "redis"}
    for name, row in rows.items():
        assert row["healthy"], row
        assert row["pid"] == pids[name]
        assert row["version"]
        assert row["url"].count("127.0.0.1") == 1
        assert "***" in row["url"] or name == "broker"  # passwords never printed
    assert rows["postgres"]["version"].startswith("PostgreSQL 16")
    assert rows["postgres"]["metrics"]["vector_available"]

    again = run_cli("up", env=fresh_home)
    assert again.returncode == 0, again.stderr
    assert _pids(home) == pids, "a second `up` must reuse the running servers"

    stopped = run_cli("down", env=fresh_home)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_alive(pid) for pid in pids.values())
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE
        and any(str(home) in part for part in (p.info["cmdline"] or []))
    ]
    assert leftovers == []
    assert not list((home / "run").glob("*.pid"))

    # State survives a restart: the same ports, so URLs in notebooks keep working.
    ports_before = json.loads((home / "stack.json").read_text())
    assert run_cli("up", env=fresh_home).returncode == 0
    ports_after = json.loads((home / "stack.json").read_text())
    assert {k: v["port"] for k, v in ports_before.items()} == {
        k: v["port"] for k, v in ports_after.items()
    }


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_pid_file_gets_cause_and_remedy(fresh_home: dict[str, str]) -> None:
    home = Path(fresh_home["DICTAMESH_HOME"])
    (home / "run").mkdir(parents=True)
    dead = _dead_pid()
    (home / "run" / "redis.pid").write_text(f"{dead}\n")

    result = run_cli("up", env=fresh_home)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"stale pid file {home / 'run' / 'redis.pid'}: pid {dead}" in message
    assert "Remedy: run `dictamesh down`" in message

    cleared = run_cli("down", env=fresh_home)
    assert "redis: removed stale pid file" in cleared.stdout
    assert run_cli("up", env=fresh_home).returncode == 0


def test_port_in_use_gets_cause_and_remedy(fresh_home: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_cli("up", env={**fresh_home, "DICTAMESH_REDIS_PORT": str(port)})
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"redis: port {port} on 127.0.0.1 is in use by another process" in message
    assert "DICTAMESH_REDIS_PORT" in message


def test_corrupted_postgres_data_dir_gets_cause_and_remedy(fresh_home: dict[str, str]) -> None:
    data = Path(fresh_home["DICTAMESH_HOME"]) / "postgres" / "data"
    data.mkdir(parents=True)
    (data / "base").mkdir()  # some files, but no PG_VERSION: not a cluster any more
    result = run_cli("up", env=fresh_home)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"data directory {data} is corrupted (PG_VERSION is missing)" in message
    assert "Remedy:" in message


def test_corrupted_state_file_gets_cause_and_remedy(fresh_home: dict[str, str]) -> None:
    home = Path(fresh_home["DICTAMESH_HOME"])
    home.mkdir(parents=True)
    (home / "stack.json").write_text("{not json")
    result = run_cli("status", env=fresh_home)
    assert result.returncode != 0
    assert "stack.json is not valid JSON" in " ".join(result.stderr.split())


def test_status_of_a_stopped_stack_exits_non_zero(fresh_home: dict[str, str]) -> None:
    result = run_cli("status", env=fresh_home)
    assert result.returncode == 1
    assert "unhealthy" in result.stdout


def test_configured_component_is_used_instead_of_started(
    stack: Endpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DICTAMESH_HOME", str(tmp_path / "other"))
    monkeypatch.setenv("DICTAMESH_POSTGRES_URL", stack.postgres_url)
    monkeypatch.setenv("DICTAMESH_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    monkeypatch.setenv("DICTAMESH_REDIS_URL", stack.redis_url)
    external = Stack(load_settings())
    assert external.embedded() == []
    up = external.up()
    assert (up.postgres_url, up.kafka_bootstrap, up.redis_url) == (
        stack.postgres_url,
        stack.kafka_bootstrap,
        stack.redis_url,
    )
    assert up.group_session_timeout_ms == 6000, "Kafka refuses less by default"
    assert stack.group_session_timeout_ms == 2000, "the embedded broker forms groups sooner"
    monkeypatch.setenv("DICTAMESH_CONSUMER_SESSION_TIMEOUT_MS", "10000")
    assert Stack(load_settings()).endpoints().group_session_timeout_ms == 10000
    assert not (tmp_path / "other" / "run").exists(), "nothing may be started for external parts"
    rows = external.status()
    assert [row.healthy for row in rows] == [True, True, True]
    assert not any(row.embedded for row in rows)
    assert external.down() == {}


def test_endpoints_repr_hides_passwords(stack: Endpoints) -> None:
    password = stack.postgres_url.split(":")[2].split("@")[0]
    assert password not in repr(stack)
    assert "***" in repr(stack)
