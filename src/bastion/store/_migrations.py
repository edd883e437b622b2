"""Append-only schema migrations, applied by ``bastion db upgrade`` and on first start.

Owns: the ordered list of migrations and applying the missing ones. Each migration is plain SQL
that both SQLite and PostgreSQL accept. Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bastion.core.errors import SchemaVersionError
from bastion.store._schema import schema_migrations


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: int
    name: str
    statements: Sequence[str]


_STEP_COLS = """
    kind VARCHAR(16) NOT NULL,
    name VARCHAR(128) NOT NULL,
    status VARCHAR(16) NOT NULL,
    input TEXT,
    input_hash VARCHAR(64),
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    decision TEXT,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="runs, steps, step archive, dead letters",
        statements=(
            """CREATE TABLE runs (
                id VARCHAR(64) PRIMARY KEY,
                tenant VARCHAR(128) NOT NULL,
                agent VARCHAR(128) NOT NULL,
                status VARCHAR(32) NOT NULL,
                input TEXT,
                output TEXT,
                error TEXT,
                wait_reason VARCHAR(64),
                waiting_step INTEGER,
                version INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                next_step INTEGER NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION NOT NULL,
                spec TEXT,
                spec_digest VARCHAR(64),
                overrides TEXT,
                lease_owner VARCHAR(128),
                lease_expires_at DOUBLE PRECISION,
                not_before DOUBLE PRECISION,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                schema_version INTEGER NOT NULL
            )""",
            "CREATE INDEX ix_runs_status ON runs (status, created_at)",
            "CREATE INDEX ix_runs_tenant ON runs (tenant, created_at)",
            "CREATE TABLE steps (run_id VARCHAR(64) NOT NULL, step_no INTEGER NOT NULL,"
            f"{_STEP_COLS}, PRIMARY KEY (run_id, step_no))",
            "CREATE TABLE step_archive (run_id VARCHAR(64) NOT NULL, generation INTEGER NOT NULL,"
            f" step_no INTEGER NOT NULL,{_STEP_COLS}, archived_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (run_id, generation, step_no))",
            """CREATE TABLE dead_letters (
                run_id VARCHAR(64) NOT NULL,
                seq INTEGER NOT NULL,
                tenant VARCHAR(128) NOT NULL,
                agent VARCHAR(128) NOT NULL,
                step_no INTEGER,
                error TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                resolved_at DOUBLE PRECISION,
                resolution VARCHAR(32),
                PRIMARY KEY (run_id, seq)
            )""",
            "CREATE INDEX ix_dead_letters_open ON dead_letters (resolved_at, created_at)",
        ),
    ),
    Migration(
        version=2,
        name="effects to confirm on replay, sealed vault, end time, principal",
        statements=(
            # {step_no: tool name}: calls that may already have acted in an earlier attempt of
            # the run; replay asks a person before making them again.
            "ALTER TABLE runs ADD COLUMN confirm_steps TEXT",
            # The run's masking vault sealed with its own data key, and that key wrapped by the
            # deployment's key (guards on); destroying vault_key makes the vault unreadable.
            "ALTER TABLE runs ADD COLUMN vault TEXT",
            "ALTER TABLE runs ADD COLUMN vault_key TEXT",
            "ALTER TABLE runs ADD COLUMN ended_at DOUBLE PRECISION",
            # Who submitted the run (a user, a service account): tools get it in ToolContext.
            "ALTER TABLE runs ADD COLUMN principal VARCHAR(128)",
            "CREATE INDEX ix_runs_lease_owner ON runs (lease_owner)",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


async def _ensure_table(conn: AsyncConnection) -> None:
    await conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS bastion_schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR(128) NOT NULL,"
            " applied_at DOUBLE PRECISION NOT NULL)"
        )
    )


async def current_version(conn: AsyncConnection) -> int:
    await _ensure_table(conn)
    rows = (await conn.execute(select(schema_migrations.c.version))).scalars().all()
    return max(rows, default=0)


async def upgrade(conn: AsyncConnection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply missing migrations inside the caller's transaction; returns the versions applied."""
    have = await current_version(conn)
    newest_known = migrations[-1].version if migrations else 0
    if have > newest_known:
        raise SchemaVersionError(
            f"the database is at schema version {have}, newer than this Bastion knows "
            f"({newest_known})"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version <= have:
            continue
        for statement in migration.statements:
            await conn.execute(text(statement))
        await conn.execute(
            schema_migrations.insert().values(
                version=migration.version, name=migration.name, applied_at=time.time()
            )
        )
        applied.append(migration.version)
    return applied
