"""A sandbox service: the server side of the remote sandbox API, over a local ``Sandbox``.

Owns: serving ``POST /v1/executions`` and ``GET /v1/health`` (see ``remote.py`` for the API)
with the standard library's threaded HTTP server, a bearer key, a body-size cap, and the event
loop thread the sandbox lives on. Run it on the isolated host (a gVisor or Firecracker VM) with
``bastion sandbox serve``; workers elsewhere use ``RemoteSandbox``. Does not own isolation: it
serves whatever ``Sandbox`` it is given (by default a ``NamespaceSandbox``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from bastion.sandbox._local import NamespaceSandbox
from bastion.sandbox._types import Sandbox
from bastion.sandbox.remote import serve_execution

MAX_BODY_BYTES = 256 * 2**20
_CALL_TIMEOUT = 3600.0


class SandboxService:
    """``with SandboxService(api_key=...) as svc: svc.url`` serves until the block ends."""

    def __init__(
        self,
        sandbox_factory: Callable[[], Sandbox] = NamespaceSandbox,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self._factory = sandbox_factory
        self._address = (host, port)
        self._api_key = api_key
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.sandbox: Sandbox | None = None

    @property
    def url(self) -> str:
        assert self._http is not None, "start() first"
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._loop_thread.start()
        self.sandbox = asyncio.run_coroutine_threadsafe(self._make(), self._loop).result(60)
        self._http = ThreadingHTTPServer(self._address, self._handler())
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()
        return self.url

    async def _make(self) -> Sandbox:
        sandbox = self._factory()
        start = getattr(sandbox, "start", None)
        if start is not None:
            await start()  # fail closed at start-up, not at the first request
        return sandbox

    def serve_forever(self) -> None:
        """Blocks (for the CLI); Ctrl-C stops it."""
        assert self._http_thread is not None
        self._http_thread.join()

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self.sandbox is not None:
            asyncio.run_coroutine_threadsafe(self.sandbox.aclose(), self._loop).result(60)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
        self._loop.close()

    def __enter__(self) -> SandboxService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        expected = f"Bearer {self._api_key}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # requests carry code; the caller's telemetry records what it needs

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                kind = "application/json" if status == 200 else "application/problem+json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _problem(self, status: int, title: str, detail: str) -> None:
                body = {"title": title, "status": status, "detail": detail}
                self._send(status, json.dumps(body).encode())

            def do_GET(self) -> None:
                if self.path != "/v1/health":
                    self._problem(404, "not_found", self.path)
                elif not service._authorized(self.headers.get("Authorization")):
                    self._problem(401, "unauthorized", "missing or wrong bearer key")
                else:
                    self._send(200, b'{"status": "ok"}')

            def do_POST(self) -> None:
                if self.path != "/v1/executions":
                    self._problem(404, "not_found", self.path)
                    return
                if not service._authorized(self.headers.get("Authorization")):
                    self._problem(401, "unauthorized", "missing or wrong bearer key")
                    return
                try:
                    size = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._problem(411, "length_required", "send a Content-Length")
                    return
                if size > MAX_BODY_BYTES:
                    self._problem(413, "too_large", f"the limit is {MAX_BODY_BYTES} bytes")
                    return
                body = self.rfile.read(size)
                assert service.sandbox is not None
                future = asyncio.run_coroutine_threadsafe(
                    serve_execution(service.sandbox, body), service._loop
                )
                self._send(*future.result(_CALL_TIMEOUT))

        return Handler
