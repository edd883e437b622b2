"""The remote backend: against the real sandbox service on 127.0.0.1 (which answers the API with
a namespace sandbox), and against ``httpx.MockTransport`` for the service's faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from bastion.sandbox import Limits, NamespaceOptions, NamespaceSandbox, RemoteSandboxError
from bastion.sandbox import service as service_module
from bastion.sandbox.remote import RemoteSandbox
from bastion.sandbox.service import SandboxService

API_KEY = "test-key"


@pytest.fixture(scope="module")
def service() -> Iterator[SandboxService]:
    """The real service (``bastion sandbox serve``) on 127.0.0.1, over a namespace sandbox."""
    with SandboxService(
        lambda: NamespaceSandbox(NamespaceOptions(pool_size=1)), api_key=API_KEY
    ) as svc:
        yield svc


@pytest.fixture
async def remote(service: SandboxService) -> AsyncIterator[RemoteSandbox]:
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


async def test_bad_key_is_not_retryable(service: SandboxService) -> None:
    sb = RemoteSandbox(service.url, api_key="wrong")
    with pytest.raises(RemoteSandboxError) as info:
        await sb.execute("print(1)")
    await sb.aclose()
    assert info.value.status == 401 and not info.value.retryable
    assert info.value.code == "sandbox_remote"


async def test_service_refuses_bad_requests(service: SandboxService) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=service.url) as client:
        bad = await client.post("/v1/executions", content=b'{"code": 1}', headers=auth)
        assert bad.status_code == 422 and bad.json()["title"] == "invalid_request"
        assert (await client.get("/v1/health")).status_code == 401
        assert (await client.get("/v1/health", headers=auth)).status_code == 200
        assert (await client.post("/v1/other", content=b"{}", headers=auth)).status_code == 404


async def test_service_caps_the_body(
    service: SandboxService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_BODY_BYTES", 100)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=service.url) as client:
        resp = await client.post("/v1/executions", content=b"x" * 1000, headers=auth)
    assert resp.status_code == 413


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
