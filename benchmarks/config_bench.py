"""Configuration: cached-get latency and change-to-watcher propagation with 100 watchers.

    .venv/bin/python -m benchmarks.config_bench --gets 20000 --changes 300 --watchers 100

One isolated embedded stack. Cached gets are timed from memory (L1), through Redis (L2, the L1
emptied before each read) and straight from Postgres. For propagation, watcher processes (each one
LISTEN connection, as service instances have) register `--watchers` watchers in all, each on one of
ten key patterns; the main process then commits `--changes` changes, and every watcher whose
pattern matches reports when its callback ran. Latency is callback time minus the moment before
`set()` was called (commit included); all processes share the machine's clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

GROUPS = 10


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(name: str, values_ms: list[float]) -> dict[str, Any]:
    return {
        "measure": name,
        "n": len(values_ms),
        "p50_ms": round(_pct(values_ms, 50), 3),
        "p95_ms": round(_pct(values_ms, 95), 3),
        "p99_ms": round(_pct(values_ms, 99), 3),
        "max_ms": round(max(values_ms), 3),
    }


def _config(postgres_url: str, redis_url: str | None, key: bytes) -> Any:
    from workbench import db
    from workbench.config import SYSTEM
    from workbench.config.secrets import StaticKeyProvider
    from workbench.config.store import Config

    return Config(
        db.make_engine(postgres_url),
        postgres_url=postgres_url,
        keys=StaticKeyProvider(key),
        redis_url=redis_url,
        actor=SYSTEM,
    )


def worker(postgres_url: str, first: int, count: int) -> None:
    """Register `count` watchers, report each notice as a JSON line until stdin closes."""
    config = _config(postgres_url, None, b"\0" * 32)
    lock = threading.Lock()

    def callback_for(index: int) -> Any:
        def callback(change: Any) -> None:
            line = json.dumps(
                {"w": index, "v": change.version_id, "k": change.key, "t": time.time()}
            )
            with lock:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

        return callback

    for index in range(first, first + count):
        config.watch(
            f"prop.g{index % GROUPS}.*",
            callback_for(index),
            environment="dev",
            name=f"bench-{index}",
        )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()
    config.close()


def bench_gets(config: Any, gets: int) -> list[dict[str, Any]]:
    for i in range(200):
        config.set(
            f"get.k{i}",
            {"n": i, "tags": ["a", "b"]},
            environment="dev",
            service="api" if i % 2 else None,
        )
    keys = [f"get.k{i}" for i in range(200)]
    results = []
    for label, before in (
        ("cached get, memory (L1)", None),
        ("cached get, Redis (L2)", config.cache.clear_local),
    ):
        for key in keys:
            config.get(key, environment="dev", service="api", cached=True)
        timings = []
        for i in range(gets if before is None else gets // 4):
            key = keys[i % len(keys)]
            if before is not None:
                before()
            start = time.perf_counter()
            config.get(key, environment="dev", service="api", cached=True)
            timings.append((time.perf_counter() - start) * 1000)
        results.append(_summary(label, timings))
    timings = []
    for i in range(gets // 10):
        start = time.perf_counter()
        config.get(keys[i % len(keys)], environment="dev", service="api")
        timings.append((time.perf_counter() - start) * 1000)
    results.append(_summary("uncached get (Postgres)", timings))
    return results


def bench_propagation(
    config: Any, postgres_url: str, watchers: int, changes: int, processes: int
) -> dict[str, Any]:
    per = watchers // processes
    procs = []
    lines: queue.Queue[str] = queue.Queue()
    for p in range(processes):
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.config_bench", "--worker", str(p * per), str(per)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "BENCH_POSTGRES_URL": postgres_url},
        )
        procs.append(proc)

        def pump(stream: Any) -> None:
            for line in stream:
                lines.put(line.strip())

        threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    ready = 0
    deadline = time.monotonic() + 120
    while ready < processes and time.monotonic() < deadline:
        if lines.get(timeout=120) == "ready":
            ready += 1
    sent: dict[int, tuple[float, int]] = {}
    for i in range(changes):
        group = i % GROUPS
        started = time.time()
        version = config.set(f"prop.g{group}.value", i, environment="dev")
        sent[version.id] = (started, group)
        time.sleep(0.02)
    expected = changes * (watchers // GROUPS)
    latencies, wrong, got = [], 0, 0
    deadline = time.monotonic() + 30
    while got < expected and time.monotonic() < deadline:
        try:
            item = json.loads(lines.get(timeout=1))
        except queue.Empty:
            continue
        got += 1
        started, group = sent[item["v"]]
        if item["w"] % GROUPS != group:
            wrong += 1
        latencies.append((item["t"] - started) * 1000)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    result = _summary(f"change -> watcher ({watchers} watchers, {processes} processes)", latencies)
    result.update(
        {
            "expected_notices": expected,
            "received": got,
            "wrong_key": wrong,
            "within_1s": sum(1 for v in latencies if v <= 1000),
        }
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gets", type=int, default=20_000)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    if args.worker:
        worker(os.environ["BENCH_POSTGRES_URL"], *args.worker)
        return
    from benchmarks.common import isolated_stack

    with isolated_stack() as endpoints:
        config = _config(endpoints.postgres_url, endpoints.redis_url, os.urandom(32))
        rows = bench_gets(config, args.gets)
        rows.append(
            bench_propagation(
                config, endpoints.postgres_url, args.watchers, args.changes, args.processes
            )
        )
        config.close()
    print(
        f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{round(psutil.virtual_memory().total / 2**30)} GiB, Python {platform.python_version()}"
    )
    print("| measure | n | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['measure']} | {row['n']} | {row['p50_ms']} | {row['p95_ms']} | "
            f"{row['p99_ms']} | {row['max_ms']} |"
        )
    print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
