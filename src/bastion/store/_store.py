"""The store: runs, the step journal, the step archive and dead letters, over SQLAlchemy Core.

Owns: persistence and its guarantees: every run write is guarded by the run's ``version``
(optimistic concurrency) and, for a worker, by its lease; a step write and the run write it
belongs to share one transaction. One class serves SQLite (embedded default, WAL) and
PostgreSQL (scale-out). The hot calls (commit, claim, get_run, get_steps) run on the driver
via ``_writer``; the rest here. Does not own: deciding what to write (the engine does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, event, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bastion.core.errors import (
    ConcurrentUpdate,
    ConfigError,
    CorruptRecord,
    RunNotFound,
    StoreError,
    StoreUnavailable,
)
from bastion.core.records import Run, RunStatus, Step
from bastion.store import _codec as codec
from bastion.store._migrations import LATEST, current_version, upgrade
from bastion.store._schema import dead_letters, runs, step_archive, steps
from bastion.store._writer import Lost, PostgresWriter, SqliteWriter, Write, hot_writer

_LOCK_RETRIES = 8


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    run_id: str
    seq: int
    tenant: str
    agent: str
    step_no: int | None
    error: dict[str, Any]
    created_at: float
    resolved_at: float | None
    resolution: str | None


def _driver_url(url: str) -> tuple[str, str]:
    """Map a user URL to an async SQLAlchemy URL and a dialect name."""
    if url.startswith(("sqlite:///", "sqlite+aiosqlite:///")):
        path = url.split(":///", 1)[1]
        return f"sqlite+aiosqlite:///{path}", "sqlite"
    if url.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
        rest = url.split("://", 1)[1]
        return f"postgresql+asyncpg://{rest}", "postgresql"
    raise ConfigError(
        f"store URL {url!r} is not supported",
        hint="Use sqlite:///path/to/bastion.db or postgresql://user@host:5432/db.",
    )


def _is_lock_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return "database is locked" in msg or "database is busy" in msg


class Store:
    """Open with ``await Store.open(url)``; close with ``await store.close()``."""

    def __init__(
        self,
        engine: AsyncEngine,
        dialect: str,
        url: str,
        writer: SqliteWriter | PostgresWriter | None = None,
    ) -> None:
        self._engine = engine
        self.dialect = dialect
        self.url = url
        self._writer = writer

    # ---- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, pool_size: int = 5) -> Store:
        driver_url, dialect = _driver_url(url)
        if dialect == "sqlite":
            engine = create_async_engine(driver_url, connect_args={"timeout": 30})
            _configure_sqlite(engine)
        else:
            engine = create_async_engine(driver_url, pool_size=pool_size, pool_pre_ping=True)
        store = cls(engine, dialect, url)
        store._writer = hot_writer(driver_url, dialect, store._safe_url(), pool_size)
        if migrate:
            await store.upgrade()
        return store

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        await self._engine.dispose()

    async def upgrade(self) -> list[int]:
        """Apply missing migrations; safe to call from many processes at once."""

        async def op() -> list[int]:
            async with self._write() as conn:
                if self.dialect == "postgresql":
                    # Serialise concurrent upgrades across processes for this transaction.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(7419001)"))
                return await upgrade(conn)

        applied: list[int] = await self._retry_locked(op)
        return applied

    async def schema_version(self) -> int:
        async with self._write() as conn:
            return await current_version(conn)

    @property
    def latest_schema(self) -> int:
        return LATEST

    # ---- transactions ---------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; translates driver errors to typed store errors."""
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (StoreError, RunNotFound):
            raise
        except OperationalError as exc:
            if _is_lock_error(exc):
                raise
            raise StoreUnavailable(f"database error: {exc.orig}", url=self._safe_url()) from exc
        except (DBAPIError, OSError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise StoreUnavailable(f"database unreachable: {exc}", url=self._safe_url()) from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                if self.dialect == "sqlite":
                    await conn.execution_options(bastion_read=True)
                yield conn
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"database unreachable: {exc}", url=self._safe_url()) from exc

    async def _retry_locked(self, op: Any) -> Any:
        """Run ``op()`` again when SQLite reports a lock it could not wait out."""
        for attempt in range(_LOCK_RETRIES):
            try:
                return await op()
            except OperationalError as exc:
                if not _is_lock_error(exc) or attempt == _LOCK_RETRIES - 1:
                    raise StoreUnavailable(
                        f"database stayed locked: {exc.orig}",
                        hint="Another process holds a long write transaction on the SQLite file.",
                    ) from exc
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def _safe_url(self) -> str:
        head, _, tail = self.url.partition("@")
        return f"{head.split('://')[0]}://***@{tail}" if tail else self.url

    # ---- runs -----------------------------------------------------------------------------

    async def create_run(self, run: Run, *, sealed_vault: tuple[str, str] | None = None) -> Run:
        """Insert a new run; ``sealed_vault`` is its ``(vault_key, vault)`` when its data is
        sealed (written in the same statement: never a sealed input without its vault)."""
        row = codec.run_to_row(run)
        if sealed_vault is not None:
            row["vault_key"], row["vault"] = sealed_vault

        async def op() -> Run:
            async with self._write() as conn:
                await conn.execute(insert(runs).values(**row))
            return run

        try:
            result: Run = await self._retry_locked(op)
        except IntegrityError as exc:
            raise ConcurrentUpdate(f"run {run.id} already exists", run_id=run.id) from exc
        return result

    async def get_run(self, run_id: str) -> Run:
        if self._writer is not None:
            row = await self._writer.run_row(run_id)
        else:
            async with self._read() as conn:
                row = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}", run_id=run_id)
        return codec.row_to_run(row)

    async def leased_by_prefix(self, prefix: str) -> list[Run]:
        """Running runs whose lease owner starts with ``prefix`` (a host's workers)."""
        query = select(runs).where(
            and_(
                runs.c.status == RunStatus.RUNNING.value,
                runs.c.lease_owner.startswith(prefix, autoescape=True),
            )
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        out: list[Run] = []
        for row in rows:
            try:
                out.append(codec.row_to_run(row))
            except CorruptRecord:
                continue  # the claim loop moves it aside when it claims it
        return out

    async def quarantine_run(self, run_id: str, error: Mapping[str, Any]) -> None:
        """Move a run to dead letters with ``error`` without reading its row back (it may be
        the row that cannot be read): status, error, no lease, a new version; a dead letter."""
        values = {
            "status": RunStatus.DEAD_LETTER.value,
            "error": codec.dumps(dict(error)),
            "lease_owner": None,
            "lease_expires_at": None,
            "version": runs.c.version + 1,
            "updated_at": time.time(),
        }

        async def op() -> None:
            async with self._write() as conn:
                await conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
                await self._open_dead_letter(conn, run_id, {}, error)

        await self._retry_locked(op)

    async def sealed_vault(self, run_id: str) -> tuple[str | None, str | None]:
        """A run's ``(vault_key, vault)``: its wrapped data key and its sealed vault."""
        query = select(runs.c.vault_key, runs.c.vault).where(runs.c.id == run_id)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise RunNotFound(f"no run with id {run_id!r}", run_id=run_id)
        return row.vault_key, row.vault

    async def destroy_vault_keys(self, *, ended_before: float) -> int:
        """Destroy the data keys (and sealed vaults) of runs that ended before ``ended_before``:
        their sealed values can never be restored. Returns how many runs lost theirs."""
        stmt = (
            update(runs)
            .where(and_(runs.c.ended_at < ended_before, runs.c.vault_key.is_not(None)))
            .values(vault_key=None, vault=None)
        )

        async def op() -> int:
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount or 0)

        count: int = await self._retry_locked(op)
        return count

    async def cancelled_among(self, run_ids: Sequence[str]) -> list[str]:
        """Which of ``run_ids`` are cancelled (one query, for a worker's cancellation poll)."""
        if not run_ids:
            return []
        query = select(runs.c.id).where(
            and_(runs.c.id.in_(list(run_ids)), runs.c.status == RunStatus.CANCELLED.value)
        )
        async with self._read() as conn:
            return list((await conn.execute(query)).scalars())

    async def list_runs(
        self,
        *,
        status: RunStatus | Sequence[RunStatus] | None = None,
        tenant: str | None = None,
        agent: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if status is not None:
            wanted = [status] if isinstance(status, RunStatus) else list(status)
            query = query.where(runs.c.status.in_([s.value for s in wanted]))
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        if agent is not None:
            query = query.where(runs.c.agent == agent)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [codec.row_to_run(r) for r in rows]

    async def commit(
        self,
        run_id: str,
        *,
        expected_version: int,
        changes: Mapping[str, Any],
        owner: str | None = None,
        steps_to_write: Sequence[Step] = (),
        dead_letter_error: Mapping[str, Any] | None = None,
        archive_from: int | None = None,
    ) -> int:
        """One atomic write: update the run (guarded by ``version`` and, if ``owner`` is given,
        by the lease), upsert journal steps, and optionally open a dead letter or archive the
        journal from ``archive_from`` on (for replay). Returns the run's new version."""
        values = codec.changes_to_row(changes)
        values["version"] = expected_version + 1
        values["updated_at"] = time.time()
        if self._writer is not None and archive_from is None and dead_letter_error is None:
            # The common case, on the writer's own connection: same guard, same transaction.
            write = Write(
                run_id=run_id,
                expected_version=expected_version,
                owner=owner,
                values=values,
                step_rows=[codec.step_to_row(s) for s in steps_to_write],
            )
            lost = await self._writer.commit(write)
            if lost is not None:
                raise lost.error(run_id, expected_version, owner)
            return expected_version + 1
        guard = and_(runs.c.id == run_id, runs.c.version == expected_version)
        if owner is not None:
            guard = and_(guard, runs.c.lease_owner == owner)

        async def op() -> int:
            async with self._write() as conn:
                result = await conn.execute(update(runs).where(guard).values(**values))
                if result.rowcount != 1:
                    await self._raise_lost(conn, run_id, expected_version, owner)
                if archive_from is not None:
                    await self._archive(conn, run_id, archive_from, values["updated_at"])
                if steps_to_write:
                    await self._upsert_steps(conn, steps_to_write)
                if dead_letter_error is not None:
                    await self._open_dead_letter(conn, run_id, changes, dead_letter_error)
            return expected_version + 1

        version: int = await self._retry_locked(op)
        return version

    async def _raise_lost(
        self, conn: AsyncConnection, run_id: str, expected: int, owner: str | None
    ) -> None:
        row = (
            await conn.execute(
                select(runs.c.version, runs.c.lease_owner).where(runs.c.id == run_id)
            )
        ).first()
        if row is None:
            raise Lost(found=False).error(run_id, expected, owner)
        lost = Lost(found=True, version=row.version, lease_owner=row.lease_owner)
        raise lost.error(run_id, expected, owner)

    async def _upsert_steps(self, conn: AsyncConnection, items: Sequence[Step]) -> None:
        rows = [codec.step_to_row(s) for s in items]
        key = [steps.c.run_id, steps.c.step_no]
        stmt: Any
        if self.dialect == "postgresql":
            pg = postgresql.insert(steps)
            stmt = pg.on_conflict_do_update(
                index_elements=key, set_={c: pg.excluded[c] for c in codec.STEP_MUTABLE}
            )
        else:
            lite = sqlite.insert(steps)
            stmt = lite.on_conflict_do_update(
                index_elements=key, set_={c: lite.excluded[c] for c in codec.STEP_MUTABLE}
            )
        await conn.execute(stmt, rows)

    async def _archive(
        self, conn: AsyncConnection, run_id: str, from_step: int, now: float
    ) -> None:
        generation = (
            await conn.execute(
                select(func.coalesce(func.max(step_archive.c.generation), 0)).where(
                    step_archive.c.run_id == run_id
                )
            )
        ).scalar_one() + 1
        cols = [c for c in steps.c]
        source = select(
            *cols, text(f"{int(generation)} AS generation"), text(f"{float(now)!r} AS archived_at")
        ).where(and_(steps.c.run_id == run_id, steps.c.step_no >= from_step))
        target_cols = [c.name for c in cols] + ["generation", "archived_at"]
        await conn.execute(step_archive.insert().from_select(target_cols, source))
        await conn.execute(
            delete(steps).where(and_(steps.c.run_id == run_id, steps.c.step_no >= from_step))
        )

    async def _open_dead_letter(
        self,
        conn: AsyncConnection,
        run_id: str,
        changes: Mapping[str, Any],
        error: Mapping[str, Any],
    ) -> None:
        head = (
            await conn.execute(select(runs.c.tenant, runs.c.agent).where(runs.c.id == run_id))
        ).one()
        seq = (
            await conn.execute(
                select(func.coalesce(func.max(dead_letters.c.seq), 0)).where(
                    dead_letters.c.run_id == run_id
                )
            )
        ).scalar_one() + 1
        await conn.execute(
            insert(dead_letters).values(
                run_id=run_id,
                seq=seq,
                tenant=head.tenant,
                agent=head.agent,
                step_no=error.get("details", {}).get("step_no"),
                error=codec.dumps(dict(error)),
                created_at=time.time(),
            )
        )

    async def resolve_dead_letters(self, run_id: str, resolution: str) -> None:
        async def op() -> None:
            async with self._write() as conn:
                await conn.execute(
                    update(dead_letters)
                    .where(
                        and_(dead_letters.c.run_id == run_id, dead_letters.c.resolved_at.is_(None))
                    )
                    .values(resolved_at=time.time(), resolution=resolution)
                )

        await self._retry_locked(op)

    async def list_dead_letters(
        self, *, tenant: str | None = None, include_resolved: bool = False, limit: int = 100
    ) -> list[DeadLetter]:
        query = select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
        if not include_resolved:
            query = query.where(dead_letters.c.resolved_at.is_(None))
        if tenant is not None:
            query = query.where(dead_letters.c.tenant == tenant)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DeadLetter(
                run_id=r.run_id,
                seq=r.seq,
                tenant=r.tenant,
                agent=r.agent,
                step_no=r.step_no,
                error=json.loads(r.error),
                created_at=r.created_at,
                resolved_at=r.resolved_at,
                resolution=r.resolution,
            )
            for r in rows
        ]

    # ---- claiming -------------------------------------------------------------------------

    async def claim_run(
        self,
        owner: str,
        *,
        lease_seconds: float,
        now: float | None = None,
        run_id: str | None = None,
    ) -> Run | None:
        """Lease one runnable run (pending, or running with an expired lease; only ``run_id``
        if given) to ``owner``. On PostgreSQL concurrent claimers skip each other's rows."""
        at = time.time() if now is None else now
        if self._writer is not None:
            running, pending = RunStatus.RUNNING.value, RunStatus.PENDING.value
            params = [running, owner, at + lease_seconds, at, pending, at, running, at]
            if run_id is not None:
                params.append(run_id)
            got = await self._writer.claim(params, run_id is not None)
            return codec.row_to_run(got) if got is not None else None
        runnable = or_(
            and_(
                runs.c.status == RunStatus.PENDING.value,
                or_(runs.c.not_before.is_(None), runs.c.not_before <= at),
            ),
            and_(runs.c.status == RunStatus.RUNNING.value, runs.c.lease_expires_at < at),
        )
        pick = select(runs.c.id).where(runnable).order_by(runs.c.created_at).limit(1)
        if run_id is not None:
            pick = pick.where(runs.c.id == run_id)
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        values = {
            "status": RunStatus.RUNNING.value,
            "lease_owner": owner,
            "lease_expires_at": at + lease_seconds,
            "version": runs.c.version + 1,
            "attempt": runs.c.attempt + 1,
            "updated_at": at,
        }

        async def op() -> Run | None:
            async with self._write() as conn:
                if self.dialect == "postgresql":
                    stmt = (
                        update(runs)
                        .where(runs.c.id == pick.scalar_subquery())
                        .values(**values)
                        .returning(*runs.c)
                    )
                    row = (await conn.execute(stmt)).first()
                else:
                    run_id = (await conn.execute(pick)).scalar()
                    if run_id is None:
                        return None
                    by_id = update(runs).where(runs.c.id == run_id).values(**values)
                    row = (await conn.execute(by_id.returning(*runs.c))).first()
            return codec.row_to_run(row) if row is not None else None

        claimed: Run | None = await self._retry_locked(op)
        return claimed

    async def renew_lease(
        self, run_id: str, owner: str, *, expected_version: int, lease_seconds: float
    ) -> int:
        return await self.commit(
            run_id,
            expected_version=expected_version,
            owner=owner,
            changes={"lease_expires_at": time.time() + lease_seconds},
        )

    # ---- journal --------------------------------------------------------------------------

    async def get_steps(self, run_id: str, *, archived: bool = False) -> list[Step]:
        if self._writer is not None and not archived:
            return [codec.row_to_step(r) for r in await self._writer.step_rows(run_id)]
        table = step_archive if archived else steps
        query = select(table).where(table.c.run_id == run_id)
        if archived:
            # Oldest archived attempt first, each in step order.
            query = query.order_by(step_archive.c.generation, step_archive.c.step_no)
        else:
            query = query.order_by(steps.c.step_no)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [codec.row_to_step(r) for r in rows]

    async def journal_bytes(self, run_id: str) -> int:
        """Bytes of journal payload stored for a run (the text columns plus fixed columns)."""
        size = func.coalesce(func.length(steps.c.input), 0) + func.coalesce(
            func.length(steps.c.output), 0
        )
        size = (
            size
            + func.coalesce(func.length(steps.c.error), 0)
            + func.coalesce(func.length(steps.c.decision), 0)
        )
        size = size + func.length(steps.c.name) + func.coalesce(func.length(steps.c.input_hash), 0)
        query = select(func.coalesce(func.sum(size), 0), func.count()).where(
            steps.c.run_id == run_id
        )
        async with self._read() as conn:
            total, count = (await conn.execute(query)).one()
        # Fixed-width columns: run_id, step_no, kind, status, counters, timestamps.
        fixed = len(run_id) + 4 + 8 + 8 + 4 + 8 * 3 + 8 * 2
        return int(total) + int(count) * fixed


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for writes so two writers queue instead of
    failing halfway through a transaction (the pysqlite driver's own BEGIN is deferred)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("bastion_read", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
