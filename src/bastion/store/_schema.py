"""Table definitions used by queries. The DDL that creates them lives in the migrations.

Owns: the SQLAlchemy Core ``Table`` objects for the current schema. Timestamps are stored as
epoch seconds (double precision) and JSON as canonical text, so one SQL text serves both SQLite
and PostgreSQL and the bytes stored per step are easy to measure.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("agent", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("input", Text),
    Column("output", Text),
    Column("error", Text),
    Column("wait_reason", String(64)),
    Column("waiting_step", Integer),
    Column("version", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("next_step", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("spec", Text),
    Column("spec_digest", String(64)),
    Column("overrides", Text),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", Float),
    Column("not_before", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("confirm_steps", Text),
    Column("vault", Text),
    Column("vault_key", Text),
    Column("ended_at", Float),
    Column("principal", String(128)),
)

_step_columns = (
    ("kind", String(16), False),
    ("name", String(128), False),
    ("status", String(16), False),
    ("input", Text, True),
    ("input_hash", String(64), True),
    ("output", Text, True),
    ("error", Text, True),
    ("attempts", Integer, False),
    ("input_tokens", BigInteger, False),
    ("output_tokens", BigInteger, False),
    ("cost_usd", Float, False),
    ("decision", Text, True),
    ("started_at", Float, False),
    ("finished_at", Float, True),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("step_no", Integer, primary_key=True),
    *(Column(n, t, nullable=nullable) for n, t, nullable in _step_columns),
)

step_archive = Table(
    "step_archive",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("step_no", Integer, primary_key=True),
    *(Column(n, t, nullable=nullable) for n, t, nullable in _step_columns),
    Column("archived_at", Float, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("agent", String(128), nullable=False),
    Column("step_no", Integer),
    Column("error", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("resolution", String(32)),
)

schema_migrations = Table(
    "bastion_schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("applied_at", Float, nullable=False),
)

STEP_COLUMNS = tuple(n for n, _, _ in _step_columns)
