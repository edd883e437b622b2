"""Building the ``run_python`` tool from ``SandboxSettings`` for the composition root.

Owns: choosing the sandbox backend from settings and starting it on first use (so commands that
never run code never start a sandbox). Does not own isolation (``bastion.sandbox``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from bastion.config import SandboxSettings
from bastion.core.errors import ConfigError
from bastion.sandbox import (
    DEFAULT_PRELOAD,
    ExecResult,
    Limits,
    NamespaceOptions,
    NamespaceSandbox,
    RemoteSandbox,
    Sandbox,
    run_python_tool,
)
from bastion.tools import Tool


class OnDemandSandbox:
    """A ``NamespaceSandbox`` started (isolation checked, pool warmed) at the first ``execute``."""

    def __init__(self, inner: NamespaceSandbox) -> None:
        self._inner = inner
        self._started = False
        self._lock = asyncio.Lock()

    async def execute(
        self,
        code: str,
        *,
        files: Mapping[str, bytes] | None = None,
        outputs: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> ExecResult:
        if not self._started:
            async with self._lock:
                if not self._started:
                    await self._inner.start()
                    self._started = True
        return await self._inner.execute(code, files=files, outputs=outputs, limits=limits)

    async def aclose(self) -> None:
        if self._started:
            await self._inner.aclose()
            self._started = False


def build_sandbox(settings: SandboxSettings, env: Mapping[str, str]) -> Sandbox:
    if settings.backend == "remote":
        if not settings.remote_url:
            raise ConfigError(
                "sandbox.remote_url is required when sandbox.backend is 'remote'",
                hint="Point it at a sandbox service (`bastion sandbox serve` or compatible).",
            )
        key = env.get(settings.api_key_env) if settings.api_key_env else None
        return RemoteSandbox(settings.remote_url, api_key=key)
    options = NamespaceOptions(
        pool_size=settings.pool_size, preload=(*DEFAULT_PRELOAD, *settings.preload)
    )
    return OnDemandSandbox(NamespaceSandbox(options))


def build_run_python(sandbox: Sandbox, settings: SandboxSettings) -> Tool:
    limits = Limits(
        wall_seconds=settings.wall_seconds,
        cpu_seconds=settings.cpu_seconds,
        memory_bytes=settings.memory_mb * 2**20,
    )
    return run_python_tool(sandbox, limits=limits)
