"""Fixtures for the sandbox tests: a real namespace sandbox (never skipped when unsupported)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.sandbox import NamespaceOptions, NamespaceSandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[NamespaceSandbox]:
    """The default configuration: zygote launcher, a pool of one."""
    sb = NamespaceSandbox(NamespaceOptions(pool_size=1))
    await sb.start()  # SandboxUnsupported here is an error, never a skip
    try:
        yield sb
    finally:
        await sb.aclose()


@pytest.fixture(params=["zygote", "exec"])
async def any_sandbox(request: pytest.FixtureRequest) -> AsyncIterator[NamespaceSandbox]:
    """Both launchers: sandboxes forked from the zygote, and a fresh interpreter each."""
    sb = NamespaceSandbox(NamespaceOptions(pool_size=1, zygote=request.param == "zygote"))
    await sb.start()
    try:
        yield sb
    finally:
        await sb.aclose()
