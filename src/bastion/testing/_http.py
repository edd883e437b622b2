"""A real HTTP server on 127.0.0.1 that answers from a script, for provider tests.

Owns: serving scripted responses (status, headers, JSON or raw body, optional delay) over real
HTTP/1.1 in a background thread, and recording every request it got. Does not know any
provider's wire format: tests write the bodies (or a function of the request).

    with HttpStubServer([StubResponse(json={...})]) as server:
        provider = OpenAIProvider(base_url=server.url, api_key="k")
        ...
        assert server.requests[0].json()["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(kw_only=True, frozen=True)
class StubResponse:
    """One scripted answer. ``json`` is encoded for you; ``body`` is sent as is (for malformed
    bodies). ``delay`` seconds pass before the answer (for client timeouts)."""

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body.encode() if isinstance(self.body, str) else self.body
        if self.json is not None:
            return json.dumps(self.json).encode()
        return b""


@dataclass(kw_only=True, frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


StubItem = StubResponse | Callable[[RecordedRequest], StubResponse]


class HttpStubServer:
    """Answers request N with script item N (a ``StubResponse`` or a function of the request).

    When the script runs out it answers 599 and counts the request in ``unexpected``;
    ``assert_complete()`` fails if items are left or unexpected requests came in.
    """

    def __init__(self, script: Iterable[StubItem] = ()) -> None:
        self._script: list[StubItem] = list(script)
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.unexpected = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, *items: StubItem) -> None:
        with self._lock:
            self._script.extend(items)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("HttpStubServer is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _next(self, request: RecordedRequest) -> StubResponse:
        with self._lock:
            self.requests.append(request)
            if not self._script:
                self.unexpected += 1
                return StubResponse(status=599, json={"error": {"message": "stub script empty"}})
            item = self._script.pop(0)
        return item if isinstance(item, StubResponse) else item(request)

    def start(self) -> HttpStubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                recorded = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                answer = stub._next(recorded)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = answer.payload()
                try:
                    self.send_response(answer.status)
                    headers = {"content-type": "application/json", **dict(answer.headers)}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (a timeout test); nothing is listening for the answer.
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        # A short poll interval keeps ``close()`` (``shutdown``) quick between tests.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HttpStubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def assert_complete(self) -> None:
        with self._lock:
            left, unexpected = len(self._script), self.unexpected
        if left or unexpected:
            raise AssertionError(
                f"stub server: {left} scripted responses unused, {unexpected} unexpected requests"
            )
