"""The hot path of the store on the driver itself: a commit, a claim, and the two reads an
execution makes (its run row and its journal).

Owns: executing ``Store.commit``'s common case (run changes and step upserts, nothing else),
``Store.claim_run``, ``Store.get_run`` and ``Store.get_steps`` with the fewest round trips. On
SQLite a dedicated ``sqlite3`` connection runs ``BEGIN IMMEDIATE; UPDATE; INSERT ... ON CONFLICT;
COMMIT`` without leaving the loop's thread. On PostgreSQL a commit is one statement (the guarded
``UPDATE`` and the step upsert joined in a CTE: one round trip, one implicit transaction) and a
claim is one ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)``, on connections kept
open between calls (no pool checkout or ping per call; server-side prepared statements). The SQL
text is built once per shape and cached. The guarantees are the store's: the run update is
guarded by ``version`` (and the lease owner when given), and the steps are written in the same
transaction or not at all.
Driver errors are translated here to ``StoreUnavailable`` (SQLite lock waits are retried first);
a guard that matched no row comes back as ``Lost``, which names the typed error to raise.
Does not own: deciding what to write, archiving, dead letters, listings or migrations
(``_store`` does those over SQLAlchemy).
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bastion.core.errors import (
    ConcurrentUpdate,
    LeaseLost,
    RunNotFound,
    StoreError,
    StoreUnavailable,
)
from bastion.store._schema import STEP_COLUMNS, steps

_T = TypeVar("_T")
STEP_KEY = ("run_id", "step_no")
_STEP_ALL = (*STEP_KEY, *STEP_COLUMNS)
_STEP_UPDATE = tuple(c for c in STEP_COLUMNS if c != "started_at")
_step_tuple = operator.itemgetter(*_STEP_ALL)


@dataclass(frozen=True, kw_only=True)
class Lost:
    """The guard matched no row: the run's current version and lease owner (None: no run)."""

    found: bool
    version: int | None = None
    lease_owner: str | None = None

    def error(self, run_id: str, expected: int, owner: str | None) -> StoreError | RunNotFound:
        if not self.found:
            return RunNotFound(f"no run with id {run_id!r}", run_id=run_id)
        if owner is not None and self.lease_owner != owner:
            return LeaseLost(
                f"run {run_id} is now leased by {self.lease_owner!r}, not {owner!r}",
                run_id=run_id,
            )
        return ConcurrentUpdate(
            f"run {run_id} is at version {self.version}, expected {expected}",
            run_id=run_id,
            expected=expected,
            actual=self.version,
        )


class _Sql:
    """SQL text for one placeholder style, cached per shape of run update."""

    def __init__(self, placeholder: str) -> None:
        self._ph = placeholder
        self._updates: dict[tuple[tuple[str, ...], bool], str] = {}
        cols = ", ".join(_STEP_ALL)
        values = ", ".join(self._p(i) for i in range(len(_STEP_ALL)))
        sets = ", ".join(f"{c} = excluded.{c}" for c in _STEP_UPDATE)
        self.upsert_steps = (
            f"INSERT INTO steps ({cols}) VALUES ({values}) "
            f"ON CONFLICT (run_id, step_no) DO UPDATE SET {sets}"
        )
        self.lost = f"SELECT version, lease_owner FROM runs WHERE id = {self._p(0)}"
        self.get_run = f"SELECT * FROM runs WHERE id = {self._p(0)}"
        self.get_steps = f"SELECT * FROM steps WHERE run_id = {self._p(0)} ORDER BY step_no"
        # Claim: params (status, owner, lease_expires_at, updated_at, pending, at, running, at
        # [, run_id]); the picked run's version and attempt go up by one.
        self._claim_set = (
            f"UPDATE runs SET status = {self._p(0)}, lease_owner = {self._p(1)}, "
            f"lease_expires_at = {self._p(2)}, version = version + 1, "
            f"attempt = attempt + 1, updated_at = {self._p(3)}"
        )
        self._runnable = (
            f"((status = {self._p(4)} AND (not_before IS NULL OR not_before <= {self._p(5)})) "
            f"OR (status = {self._p(6)} AND lease_expires_at < {self._p(7)}))"
        )

    def claim_pick(self, one_run: bool) -> str:
        only = f" AND id = {self._p(8)}" if one_run else ""
        return f"SELECT id FROM runs WHERE {self._runnable}{only} ORDER BY created_at LIMIT 1"

    def claim_update(self) -> str:
        """SQLite: set the lease on the run picked in the same transaction (last param: id)."""
        return f"{self._claim_set} WHERE id = {self._p(8)} RETURNING *"

    def claim_one_statement(self, one_run: bool) -> str:
        """PostgreSQL: pick and lease in one statement; concurrent claimers skip locked rows."""
        pick = self.claim_pick(one_run)
        return f"{self._claim_set} WHERE id = ({pick} FOR UPDATE SKIP LOCKED) RETURNING *"

    def _p(self, i: int) -> str:
        return "?" if self._ph == "?" else f"${i + 1}"

    def update_run(self, columns: tuple[str, ...], guarded_by_owner: bool) -> str:
        key = (columns, guarded_by_owner)
        sql = self._updates.get(key)
        if sql is None:
            n = len(columns)
            sets = ", ".join(f"{c} = {self._p(i)}" for i, c in enumerate(columns))
            where = f"id = {self._p(n)} AND version = {self._p(n + 1)}"
            if guarded_by_owner:
                where += f" AND lease_owner = {self._p(n + 2)}"
            sql = f"UPDATE runs SET {sets} WHERE {where}"
            self._updates[key] = sql
        return sql

    def update_run_with_steps(self, columns: tuple[str, ...], guarded_by_owner: bool) -> str:
        """PostgreSQL: the guarded run update and the step upsert as ONE statement (one round
        trip, one implicit transaction). Steps are inserted only if the guard matched; the
        statement returns how many run rows it updated. Step columns arrive as typed arrays."""
        key = (("+steps", *columns), guarded_by_owner)
        sql = self._updates.get(key)
        if sql is None:
            first = len(columns) + (3 if guarded_by_owner else 2)
            arrays = ", ".join(
                f"{self._p(first + i)}::{_pg_type(c)}[]" for i, c in enumerate(_STEP_ALL)
            )
            sets = ", ".join(f"{c} = excluded.{c}" for c in _STEP_UPDATE)
            sql = (
                f"WITH u AS ({self.update_run(columns, guarded_by_owner)} RETURNING 1), "
                f"s AS (INSERT INTO steps ({', '.join(_STEP_ALL)}) "
                f"SELECT * FROM unnest({arrays}) WHERE EXISTS (SELECT 1 FROM u) "
                f"ON CONFLICT (run_id, step_no) DO UPDATE SET {sets}) "
                "SELECT count(*) FROM u"
            )
            self._updates[key] = sql
        return sql


def _pg_type(column: str) -> str:
    """The PostgreSQL array element type for a step column, from the table definition."""
    name = type(steps.c[column].type).__name__
    return {"Integer": "int4", "BigInteger": "int8", "Float": "float8"}.get(name, "text")


@dataclass(frozen=True, kw_only=True)
class Write:
    """One commit: ``values`` (column -> value) for the run row, guarded, and step rows."""

    run_id: str
    expected_version: int
    owner: str | None
    values: dict[str, Any]
    step_rows: Sequence[dict[str, Any]]

    def update_params(self) -> tuple[tuple[str, ...], list[Any]]:
        columns = tuple(self.values)
        params = [self.values[c] for c in columns]
        params += [self.run_id, self.expected_version]
        if self.owner is not None:
            params.append(self.owner)
        return columns, params

    def step_params(self) -> list[tuple[Any, ...]]:
        return [_step_tuple(row) for row in self.step_rows]

    def step_arrays(self) -> list[list[Any]]:
        """One array per step column (for ``unnest``); a step listed twice keeps its last
        version, as consecutive upserts would (one statement may not update a row twice)."""
        last: dict[tuple[str, int], dict[str, Any]] = {}
        for row in self.step_rows:
            key = (row["run_id"], row["step_no"])
            seen = last.get(key)
            # An upsert keeps the first started_at (it is not in the updated columns).
            last[key] = row if seen is None else {**row, "started_at": seen["started_at"]}
        return [[row[c] for row in last.values()] for c in _STEP_ALL]


class _Reads:
    """The reads an execution makes, over the writer's connection."""

    _sql: _Sql

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        raise NotImplementedError

    async def run_row(self, run_id: str) -> Any:
        rows = await self.fetch(self._sql.get_run, run_id)
        return rows[0] if rows else None

    async def step_rows(self, run_id: str) -> list[Any]:
        return await self.fetch(self._sql.get_steps, run_id)


class SqliteWriter(_Reads):
    """A dedicated ``sqlite3`` connection, driven from the event loop's own thread.

    A commit here is ~50 microseconds of C work on a local file with no fsync (WAL,
    ``synchronous=NORMAL``), so it runs inline: handing it to a thread costs more than doing it
    (two wake-ups and GIL hand-offs per commit, worse on a busy machine). It never blocks on a
    lock: the connection's busy timeout is 0, and while another connection holds the write
    lock the commit is retried after an ``asyncio.sleep`` with backoff, for up to
    ``busy_timeout_ms``. A commit that failed was rolled back, so retrying it is safe."""

    def __init__(self, path: str, *, url: str, busy_timeout_ms: int = 10000) -> None:
        self._path = path
        self._url = url
        self._busy_ms = busy_timeout_ms
        self._sql = _Sql("?")
        self._con: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
            try:
                con.execute("PRAGMA busy_timeout=0")
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.row_factory = sqlite3.Row
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    async def commit(self, write: Write) -> Lost | None:
        # A yield point, as a real I/O wait would be: other executions sharing the loop (and
        # the lease watcher) interleave with this one at every commit.
        await asyncio.sleep(0)
        return await self._retrying(self._commit, write)

    async def claim(self, params: list[Any], one_run: bool) -> Any:
        """Pick a runnable run and lease it, in one write transaction; the new row or None."""
        await asyncio.sleep(0)
        return await self._retrying(self._claim, params, one_run)

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        """Rows of one read (a single statement reads one consistent snapshot)."""
        return await self._retrying(self._fetch, sql, params)

    def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._connection().execute(sql, params).fetchall()

    def _claim(self, params: list[Any], one_run: bool) -> Any:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            # "?" placeholders bind in order: the pick uses params 4.. , the update 0..3 + id.
            picked = con.execute(self._sql.claim_pick(one_run), params[4:]).fetchone()
            row = None
            if picked is not None:
                row = con.execute(self._sql.claim_update(), [*params[:4], picked[0]]).fetchone()
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return row

    async def _retrying(self, op: Callable[..., _T], *args: Any) -> _T:
        """Run ``op`` inline; while another connection holds the lock, sleep and try again."""
        deadline = time.monotonic() + self._busy_ms / 1000
        delay = 0.001
        while True:
            try:
                return op(*args)
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if "locked" not in msg and "busy" not in msg:
                    raise StoreUnavailable(f"database error: {exc}", url=self._url) from exc
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"database stayed locked: {exc}",
                        hint="Another process holds a long write transaction on the SQLite file.",
                    ) from exc
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"database error: {exc}", url=self._url) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _commit(self, write: Write) -> Lost | None:
        con = self._connection()
        columns, params = write.update_params()
        con.execute("BEGIN IMMEDIATE")
        try:
            cur = con.execute(self._sql.update_run(columns, write.owner is not None), params)
            if cur.rowcount != 1:
                row = con.execute(self._sql.lost, (write.run_id,)).fetchone()
                con.execute("ROLLBACK")
                if row is None:
                    return Lost(found=False)
                return Lost(found=True, version=row[0], lease_owner=row[1])
            if write.step_rows:
                con.executemany(self._sql.upsert_steps, write.step_params())
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return None

    async def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class PostgresWriter(_Reads):
    """``asyncpg`` connections kept open between commits (up to ``keep`` idle ones); a broken
    connection is dropped, never reused."""

    def __init__(self, dsn: str, *, url: str, keep: int = 5, connect_timeout: float = 10.0) -> None:
        self._dsn = dsn
        self._url = url
        self._keep = keep
        self._timeout = connect_timeout
        self._sql = _Sql("$")
        self._idle: list[Any] = []

    async def _acquire(self) -> Any:
        import asyncpg

        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
        return await asyncpg.connect(self._dsn, timeout=self._timeout)

    def _release(self, conn: Any, healthy: bool) -> None:
        reusable = healthy and not conn.is_closed() and not conn.is_in_transaction()
        if reusable and len(self._idle) < self._keep:
            self._idle.append(conn)
            return
        conn.terminate()

    async def _on_connection(self, op: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        import asyncpg

        healthy = False
        conn = None
        try:
            conn = await self._acquire()
            result = await op(conn, *args)
            healthy = True
            return result
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"database error: {exc}", url=self._url) from exc
        finally:
            if conn is not None:
                self._release(conn, healthy)

    async def commit(self, write: Write) -> Lost | None:
        return await self._on_connection(self._commit, write)

    async def claim(self, params: list[Any], one_run: bool) -> Any:
        """Pick a runnable run and lease it, in one statement; the new row or None."""
        sql = self._sql.claim_one_statement(one_run)
        return await self._on_connection(_fetchrow, sql, params)

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        return await self._on_connection(_fetch, sql, params)

    async def _commit(self, conn: Any, write: Write) -> Lost | None:
        """One statement in autocommit mode: atomic, and durable when it returns."""
        columns, params = write.update_params()
        guarded = write.owner is not None
        if write.step_rows:
            sql = self._sql.update_run_with_steps(columns, guarded)
            updated = await conn.fetchval(sql, *params, *write.step_arrays())
        else:
            status = await conn.execute(self._sql.update_run(columns, guarded), *params)
            updated = 1 if status == "UPDATE 1" else 0
        if updated == 1:
            return None
        row = await conn.fetchrow(self._sql.lost, write.run_id)
        if row is None:
            return Lost(found=False)
        return Lost(found=True, version=row[0], lease_owner=row[1])

    async def close(self) -> None:
        import asyncpg

        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


async def _fetchrow(conn: Any, sql: str, params: Sequence[Any]) -> Any:
    return await conn.fetchrow(sql, *params)


async def _fetch(conn: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    rows: list[Any] = await conn.fetch(sql, *params)
    return rows


def hot_writer(
    driver_url: str, dialect: str, safe_url: str, keep: int
) -> SqliteWriter | PostgresWriter | None:
    """The writer for ``commit``'s common case; None for an in-memory or URI SQLite database
    (a second connection would not see the same database)."""
    target = driver_url.split("://", 1)[1]
    if dialect == "postgresql":
        return PostgresWriter(f"postgresql://{target}", url=safe_url, keep=keep)
    path = target[1:]  # sqlite+aiosqlite:///path -> "/path" after "://"
    if path in ("", ":memory:") or path.startswith("file:") or "?" in path:
        return None
    return SqliteWriter(path, url=safe_url)
