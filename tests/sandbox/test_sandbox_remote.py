"""The remote backend: against a real HTTP service on 127.0.0.1 (which answers the API with a
namespace sandbox), and against ``httpx.MockTransport`` for the service's faults."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bastion.sandbox import Limits, NamespaceOptions, NamespaceSandbox, RemoteSandboxError
from bastion.sandbox.remote import RemoteSandbox, serve_execution

API_KEY = "test-key"


class _Service:
    """A sandbox service: HTTP in a thread, a namespace sandbox on its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sandbox = NamespaceSandbox(NamespaceOptions(pool_size=1))
        asyncio.run_coroutine_threadsafe(self.sandbox.start(), self.loop).result(30)
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, b'{"status": "ok"}')

            def do_POST(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    self._send(401, b'{"detail": "bad key"}')
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                future = asyncio.run_coroutine_threadsafe(
                    serve_execution(service.sandbox, body), service.loop
                )
                self._send(*future.result(60))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.http_thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.http_thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        asyncio.run_coroutine_threadsafe(self.sandbox.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def service() -> Iterator[_Service]:
    svc = _Service()
    yield svc
    svc.close()


@pytest.fixture
async def remote(service: _Service) -> AsyncIterator[RemoteSandbox]:
    sb = RemoteSandbox(service.url, api_key=API_KEY)
    yield sb
    await sb.aclose()


async def test_runs_code_with_files_through_the_service(remote: RemoteSandbox) -> None:
    assert await remote.health()
    code = "data = open('in.csv').read()\nopen('out.txt', 'w').write(data.upper())\nprint('done')\n"
    result = await remote.execute(code, files={"in.csv": b"a,b\n1,2\n"}, outputs=["out.txt"])
    assert result.ok and result.stdout == "done\n" and result.backend == "remote"
    assert result.files == {"out.txt": b"A,B\n1,2\n"}


async def test_limits_travel_and_reasons_come_back(remote: RemoteSandbox) -> None:
    result = await remote.execute("while True: pass\n", limits=Limits(wall_seconds=0.5))
    assert result.killed_reason == "wall_time" and result.exit_status is None


async def test_isolation_holds_behind_the_service(remote: RemoteSandbox) -> None:
    result = await remote.execute("import socket\nsocket.socket()\n")
    assert result.exit_status == 1 and "PermissionError" in result.stderr


async def test_bad_key_is_not_retryable(service: _Service) -> None:
    sb = RemoteSandbox(service.url, api_key="wrong")
    with pytest.raises(RemoteSandboxError) as info:
        await sb.execute("print(1)")
    await sb.aclose()
    assert info.value.status == 401 and not info.value.retryable
    assert info.value.code == "sandbox_remote"


async def test_invalid_request_is_a_422(service: _Service) -> None:
    status, body = await asyncio.wrap_future(
        asyncio.run_coroutine_threadsafe(
            serve_execution(service.sandbox, b'{"code": 1}'), service.loop
        )
    )
    assert status == 422 and json.loads(body)["title"] == "invalid_request"


def _mock(handler: httpx.MockTransport) -> RemoteSandbox:
    return RemoteSandbox("http://sandbox.test", client=httpx.AsyncClient(transport=handler))


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False)]
)
async def test_service_errors_are_typed(status: int, retryable: bool) -> None:
    sb = _mock(httpx.MockTransport(lambda r: httpx.Response(status, json={"detail": "nope"})))
    with pytest.raises(RemoteSandboxError) as info:
        await sb.execute("print(1)")
    assert info.value.status == status and info.value.retryable is retryable
    assert "nope" in info.value.message


async def test_connection_failure_and_timeout_are_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler in (refuse, slow):
        with pytest.raises(RemoteSandboxError) as info:
            await _mock(httpx.MockTransport(handler)).execute("print(1)")
        assert info.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"stdout": "x"}',
        b'{"stdout": "", "stderr": "", "exit_status": 0, "files": {"a": "%%%"}}',
    ],
)
async def test_malformed_responses_are_refused(body: bytes) -> None:
    sb = _mock(httpx.MockTransport(lambda r: httpx.Response(200, content=body)))
    with pytest.raises(RemoteSandboxError, match="malformed"):
        await sb.execute("print(1)")


async def test_request_carries_code_files_and_limits() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"stdout": "", "stderr": "", "exit_status": 0})

    await _mock(httpx.MockTransport(handler)).execute(
        "print(1)", files={"a.txt": b"hi"}, outputs=["*.csv"], limits=Limits(cpu_seconds=3)
    )
    (req,) = seen
    assert req["code"] == "print(1)" and req["files"] == {"a.txt": "aGk="}
    assert req["outputs"] == ["*.csv"] and req["limits"]["cpu_seconds"] == 3  # type: ignore[index]
