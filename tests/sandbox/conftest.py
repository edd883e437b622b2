"""Fixtures for the sandbox tests: a real namespace sandbox (never skipped when unsupported)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.sandbox import NamespaceOptions, NamespaceSandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[NamespaceSandbox]:
    sb = NamespaceSandbox(NamespaceOptions(pool_size=1))
    await sb.start()  # SandboxUnsupported here is an error, never a skip
    try:
        yield sb
    finally:
        await sb.aclose()
