"""A ``Sandbox`` backed by a remote sandbox service over HTTP, and that service's wire format.

Owns: the "Bastion sandbox service API v1" (``POST /v1/executions``, ``GET /v1/health``), its
request/response models, the client (``RemoteSandbox``, httpx) and ``serve_execution``, the
server half any service can call to answer the API with a local ``Sandbox``. This is how
deployments that want VM-grade isolation (gVisor, Firecracker, Kata, a managed service) plug in:
run a service that speaks this API on the isolated host, or write a small adapter class with the
same ``execute`` signature for a vendor API. Does not own isolation itself.

API::

    POST /v1/executions        Authorization: Bearer <key> (optional)
      {"code": str, "files": {path: base64}, "outputs": [glob], "limits": Limits}
    200 {"stdout", "stderr", "exit_status", "killed_reason", "stdout_truncated",
         "stderr_truncated", "files": {path: base64}, "files_skipped": {path: why},
         "usage": {...}, "wall_seconds": float}
    4xx/5xx  application/problem+json (RFC 9457); 429 and 5xx may be retried.
    GET /v1/health -> 200 {"status": "ok"}
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.core.errors import BastionError
from bastion.sandbox._errors import RemoteSandboxError
from bastion.sandbox._types import (
    ExecResult,
    KilledReason,
    Limits,
    ResourceUsage,
    Sandbox,
    Timing,
    check_input_name,
)


class ExecutionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    files: dict[str, str] = Field(default_factory=dict)  # path -> base64
    outputs: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)


class ExecutionResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stdout: str
    stderr: str
    exit_status: int | None
    killed_reason: KilledReason | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    files: dict[str, str] = Field(default_factory=dict)
    files_skipped: dict[str, str] = Field(default_factory=dict)
    usage: ResourceUsage = Field(default_factory=ResourceUsage)
    wall_seconds: float = 0.0


def _b64(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


class RemoteSandbox:
    """Runs code on a sandbox service; errors of the service are ``RemoteSandboxError``."""

    backend = "remote"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient()
        self._base = base_url.rstrip("/")
        self._headers = headers
        self._grace = grace_seconds

    async def execute(
        self,
        code: str,
        *,
        files: Mapping[str, bytes] | None = None,
        outputs: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> ExecResult:
        limits = limits or Limits()
        for name in files or {}:
            check_input_name(name)
        request = ExecutionRequest(
            code=code, files=_b64(files or {}), outputs=list(outputs), limits=limits
        )
        try:
            resp = await self._client.post(
                f"{self._base}/v1/executions",
                json=request.model_dump(mode="json"),
                headers=self._headers,
                # The service enforces the wall limit; we wait a little longer for its answer.
                timeout=limits.wall_seconds + self._grace,
            )
        except httpx.TimeoutException as exc:
            raise RemoteSandboxError(
                f"The sandbox service did not answer in time: {exc!r}", retryable=True
            ) from exc
        except httpx.TransportError as exc:
            raise RemoteSandboxError(
                f"The sandbox service could not be reached: {exc!r}", retryable=True
            ) from exc
        if resp.status_code != 200:
            raise _status_error(resp)
        try:
            body = ExecutionResponse.model_validate_json(resp.content)
            returned = {k: base64.b64decode(v, validate=True) for k, v in body.files.items()}
        except (ValidationError, binascii.Error, ValueError) as exc:
            raise RemoteSandboxError(
                f"The sandbox service sent a malformed response: {exc}",
                status=resp.status_code,
                retryable=False,
            ) from exc
        return ExecResult(
            stdout=body.stdout,
            stderr=body.stderr,
            exit_status=body.exit_status,
            killed_reason=body.killed_reason,
            stdout_truncated=body.stdout_truncated,
            stderr_truncated=body.stderr_truncated,
            files=returned,
            files_skipped=body.files_skipped,
            usage=body.usage,
            timing=Timing(wall_seconds=body.wall_seconds, setup_seconds=0.0, warm=False),
            backend=self.backend,
        )

    async def health(self) -> bool:
        try:
            resp = await self._client.get(f"{self._base}/v1/health", headers=self._headers)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _status_error(resp: httpx.Response) -> RemoteSandboxError:
    try:
        detail = str(resp.json().get("detail", ""))
    except ValueError:
        detail = resp.text[:200]
    status = resp.status_code
    retryable = status == 429 or status >= 500
    if status in (401, 403):
        what = "refused our credentials"
    elif retryable:
        what = "is unavailable"
    else:
        what = "rejected the request"
    return RemoteSandboxError(
        f"The sandbox service {what} (HTTP {status}): {detail}", status=status, retryable=retryable
    )


async def serve_execution(sandbox: Sandbox, body: bytes) -> tuple[int, bytes]:
    """The server half of ``POST /v1/executions``: (status, JSON body) for a request body.

    A service on an isolated host calls this with its own local ``Sandbox``; the test suite
    does the same behind a real HTTP server on 127.0.0.1.
    """
    try:
        request = ExecutionRequest.model_validate_json(body)
        files = {k: base64.b64decode(v, validate=True) for k, v in request.files.items()}
    except (ValidationError, binascii.Error, ValueError) as exc:
        return 422, _problem(422, "invalid_request", str(exc))
    try:
        result = await sandbox.execute(
            request.code, files=files, outputs=request.outputs, limits=request.limits
        )
    except BastionError as exc:
        status = 400 if exc.http_status < 500 else 503
        return status, _problem(status, exc.code, exc.message)
    response = ExecutionResponse(
        stdout=result.stdout,
        stderr=result.stderr,
        exit_status=result.exit_status,
        killed_reason=result.killed_reason,
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        files=_b64(result.files),
        files_skipped=result.files_skipped,
        usage=result.usage,
        wall_seconds=result.timing.wall_seconds if result.timing else 0.0,
    )
    return 200, response.model_dump_json().encode()


def _problem(status: int, code: str, detail: str) -> bytes:
    import json

    return json.dumps(
        {
            "type": f"https://bastion.dev/errors/{code}",
            "title": code,
            "status": status,
            "detail": detail,
        }
    ).encode()
