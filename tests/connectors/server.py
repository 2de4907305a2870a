"""A local HTTP server whose answers a test scripts, and which records every request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes/str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Seen], Reply]


class ScriptedServer:
    """Routes (method, path) to a handler, or to a queue of replies consumed in order."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.queues: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[Seen] = []
        self.url = ""

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def script(self, method: str, path: str, *replies: Reply) -> None:
        self.queues[(method, path)] = list(replies)

    def calls(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    def answer(self, seen: Seen) -> Reply:
        key = (seen.method, seen.path)
        if self.queues.get(key):
            queue = self.queues[key]
            return queue.pop(0) if len(queue) > 1 else queue[0]
        if key in self.routes:
            return self.routes[key](seen)
        return Reply(404, {"error": "no route"})


@contextmanager
def serve(server: ScriptedServer) -> Iterator[ScriptedServer]:
    class _Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            server.requests.append(seen)
            reply = server.answer(seen)
            if reply.delay:
                time.sleep(reply.delay)  # the fault under test: a slow source
            body = reply.body
            if isinstance(body, str):
                payload = body.encode()
            elif isinstance(body, bytes):
                payload = body
            else:
                payload = json.dumps(body).encode()
            try:
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
