"""A scripted JSON API on 127.0.0.1 for client tests (this machine cannot reach the real services)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Reply:
    def __init__(self, body=None, status: int = 200, headers: dict | None = None, delay: float = 0.0,
                 raw: bytes | None = None):
        self.body, self.status, self.headers, self.delay, self.raw = body, status, headers or {}, delay, raw

    def payload(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.body).encode()


class FakeApi:
    """Routes map a path to a handler ``query -> Reply``; ``script`` queues one-off faults before it."""

    def __init__(self):
        self.handlers: dict[str, object] = {}
        self.scripts: dict[str, list[Reply]] = defaultdict(list)
        self.requests: list[tuple[str, dict]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parsed = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                api.requests.append((parsed.path, query))
                reply = api._reply(parsed.path, query)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.payload()
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass  # keep the test output free of one access-log line per request

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _reply(self, path: str, query: dict) -> Reply:
        if self.scripts.get(path):
            return self.scripts[path].pop(0)
        handler = self.handlers.get(path)
        if handler is None:
            return Reply({"error": "not found"}, status=404)
        return handler(query)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


# A live-loop config in a test points Open-Meteo at the local server too: nothing may leave the machine.
OFFLINE_FORECASTS = "forecast_base_url: {url}\nforecast_ensemble_base_url: {url}\n"
