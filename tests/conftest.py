"""Shared fixtures: a store per backend (SQLite file in tmp_path; PostgreSQL in a fresh
database when BASTION_TEST_POSTGRES_URL is set, as CI does)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bastion.store import Store

PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_admin_url() -> str:
    assert PG_URL is not None
    base, _, _db = PG_URL.rpartition("/")
    return f"{base}/postgres"


def _require_pg() -> str:
    if PG_URL is None:
        if IN_CI:
            pytest.fail("CI=true but BASTION_TEST_POSTGRES_URL is not set")
        pytest.skip("set BASTION_TEST_POSTGRES_URL to run PostgreSQL tests")
    return PG_URL


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards. Yields its URL."""
    import asyncio

    import asyncpg

    _require_pg()
    name = f"bastion_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_url().replace("postgresql://", "postgres://", 1)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rpartition("/")[0] if PG_URL else ""
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bastion.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Parametrises a test over both backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bastion.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    try:
        yield s
    finally:
        await s.close()
