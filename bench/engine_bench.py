"""Engine overhead: milliseconds and bytes stored per journal step, on SQLite and PostgreSQL.

A run is driven by a function model that calls a no-op tool (effect "none") until the run has
the wanted number of steps, then answers. Every react turn is two journal rows (a model step and
a tool step); the final answer adds a model step and a validation step. The time measured is the
wall time of ``Worker.run_once`` (claim, read the journal, execute to completion, read the run
back) divided by the steps actually stored. Each size is measured ``--reps`` times after a
warm-up run and the median is reported.

    .venv/bin/python bench/engine_bench.py [--backends sqlite,postgres] [--sizes 50,200,1000]

PostgreSQL: ``BASTION_BENCH_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test);
a fresh database is created next to it for the bench and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.core.messages import ModelRequest, ModelResponse
from bastion.engine import Agent, Engine, Limits, Worker
from bastion.models import ModelRouter
from bastion.store import Store
from bastion.testing import FunctionModel, call, reply
from bastion.tools import tool

RESULTS = Path(__file__).parent / "results" / "engine.md"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@tool(effect="none")
async def noop() -> str:
    """Do nothing."""
    return "ok"


@tool(effect="none", name="noop")
def noop_sync() -> str:
    """Do nothing, as a plain function (the engine runs it in a worker thread)."""
    return "ok"


def _model_for(steps: int) -> FunctionModel:
    """Tool calls until ``steps`` journal rows will exist after the final answer."""
    tool_turns = max(0, (steps - 2) // 2)
    asked = [0]

    def answer(request: ModelRequest) -> ModelResponse:
        # Counts its own calls (O(1)) rather than scanning the history, so the bench measures
        # the engine and not the model stand-in.
        asked[0] += 1
        if asked[0] <= tool_turns:
            return reply(None, call("noop", {}))
        return reply("finished")

    return FunctionModel(answer)


# ---- measurements -------------------------------------------------------------------------


@dataclass(kw_only=True)
class Sample:
    steps: int
    seconds: float
    journal_bytes: int
    disk_bytes: int | None
    commit_seconds: float
    commits: int


@dataclass(kw_only=True)
class Row:
    backend: str
    size: int
    samples: list[Sample] = field(default_factory=list)
    profile: list[tuple[str, float]] = field(default_factory=list)
    disk_bytes_per_step: float = 0.0

    def median(self, fn: Callable[[Sample], float]) -> float:
        return statistics.median(fn(s) for s in self.samples)


class Timed:
    """Wraps ``store.commit`` to count commits and the wall time spent inside them."""

    def __init__(self, store: Store) -> None:
        self.seconds = 0.0
        self.count = 0
        inner = store.commit

        async def commit(*args: Any, **kwargs: Any) -> int:
            t0 = time.perf_counter()
            try:
                version: int = await inner(*args, **kwargs)
                return version
            finally:
                self.seconds += time.perf_counter() - t0
                self.count += 1

        setattr(store, "commit", commit)  # noqa: B010 - instrumenting one instance

    def reset(self) -> None:
        self.seconds = 0.0
        self.count = 0


class DiskProbe:
    """Bytes the database really grew by: SQLite pages in use after a WAL checkpoint, or the
    PostgreSQL relation sizes of the journal table (heap, indexes, TOAST)."""

    def __init__(self, store: Store, sqlite_path: Path | None) -> None:
        self._store = store
        self._path = sqlite_path

    async def size(self) -> int:
        if self._path is not None:
            return await asyncio.to_thread(self._sqlite_size)
        from sqlalchemy import text

        async with self._store._engine.connect() as conn:
            value = (await conn.execute(text("SELECT pg_total_relation_size('steps')"))).scalar()
        return int(value or 0)

    def _sqlite_size(self) -> int:
        assert self._path is not None
        con = sqlite3.connect(self._path)
        try:
            con.execute("PRAGMA wal_checkpoint(FULL)")
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            free = con.execute("PRAGMA freelist_count").fetchone()[0]
            size = con.execute("PRAGMA page_size").fetchone()[0]
            return int((pages - free) * size)
        finally:
            con.close()


async def commit_floor(store: Store, sqlite_path: Path | None, n: int = 300) -> float:
    """Median ms of the cheapest durable write on this database right now: one statement
    updating one row of a scratch table, committed (PostgreSQL: autocommit, so fsync of the
    WAL; SQLite: BEGIN IMMEDIATE / UPDATE / COMMIT in WAL mode). The engine cannot go below it."""
    times: list[float] = []
    if sqlite_path is not None:
        con = sqlite3.connect(sqlite_path, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=NORMAL")  # as the store's connections
            con.execute("CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, v INT)")
            con.execute("INSERT OR IGNORE INTO bench_floor VALUES (1, 0)")
            for i in range(n):
                t0 = time.perf_counter()
                con.execute("BEGIN IMMEDIATE")
                con.execute("UPDATE bench_floor SET v = ? WHERE id = 1", (i,))
                con.execute("COMMIT")
                times.append(time.perf_counter() - t0)
        finally:
            con.close()
        return statistics.median(times) * 1e3
    import asyncpg

    dsn = "postgresql://" + store.url.split("://", 1)[1]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id INT PRIMARY KEY, v INT)")
        await conn.execute("INSERT INTO bench_floor VALUES (1, 0) ON CONFLICT DO NOTHING")
        for i in range(n):
            t0 = time.perf_counter()
            await conn.execute("UPDATE bench_floor SET v = $1 WHERE id = 1", i)
            times.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    return statistics.median(times) * 1e3


async def one_run(
    store: Store,
    size: int,
    probe: DiskProbe | None,
    timed: Timed,
    profiler: cProfile.Profile | None,
    *,
    sync_tool: bool = False,
) -> Sample:
    model = _model_for(size)
    agent = Agent(
        name="bench",
        model="function:bench",
        tools=[noop_sync if sync_tool else noop],
        limits=Limits(max_turns=size + 10, max_wall_seconds=3600.0),
    )
    router = ModelRouter({"function": model})
    engine = Engine(store=store, complete=router.complete, agents={"bench": agent})
    worker = Worker(engine, worker_id="bench-worker")
    run = await engine.submit("bench", "run the bench")
    # Timed runs are not probed: a checkpoint from another connection makes the next write
    # pay ~3 ms, which would be the probe's cost, not the engine's.
    before = await probe.size() if probe is not None else 0
    timed.reset()
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    done = await worker.run_once(run.id)
    seconds = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
    assert done is not None and done.status.value == "completed", done
    after = await probe.size() if probe is not None else None
    steps = len(await store.get_steps(run.id))
    return Sample(
        steps=steps,
        seconds=seconds,
        journal_bytes=await store.journal_bytes(run.id),
        disk_bytes=after - before if after is not None else None,
        commit_seconds=timed.seconds,
        commits=timed.count,
    )


# ---- profile breakdown --------------------------------------------------------------------

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting (event loop idle: DB thread or server)", ("'poll' of 'select.epoll",)),
    ("socket send/recv", ("of '_socket.socket'",)),
    ("sqlite3 (C, statements)", ("'sqlite3.Connection'", "'sqlite3.Cursor'")),
    ("sqlalchemy (+ greenlet)", ("/sqlalchemy/", "greenlet")),
    ("driver (aiosqlite / asyncpg, Python side)", ("/aiosqlite/", "/asyncpg/", "asyncpg.")),
    ("thread hand-off", ("/concurrent/", "_queue.", "_thread.", "/threading.py")),
    ("asyncio machinery", ("/asyncio/", "_asyncio", "_contextvars", "selectors.py")),
    ("pydantic", ("/pydantic/", "pydantic_core")),
    ("json + hashing", ("/json/", "_json", "_hashlib", "{built-in method _json")),
    ("bastion.store", ("/bastion/store/",)),
    ("bastion.engine", ("/bastion/engine/",)),
    ("bastion (models, tools, testing, core)", ("/bastion/",)),
)


def _group(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    where = f"{filename}:{name}"
    for label, needles in _GROUPS:
        if any(n in where for n in needles):
            return label
    return "other"


def breakdown(profiler: cProfile.Profile, steps: int) -> list[tuple[str, float]]:
    """Self time per group, in ms per step (main thread only: SQLite runs in aiosqlite's
    thread and shows up as waiting)."""
    stats = pstats.Stats(profiler)
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for func, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        label = _group(func)
        totals[label] = totals.get(label, 0.0) + tottime
    ordered = sorted(totals.items(), key=lambda kv: -kv[1])
    return [(label, 1000 * t / steps) for label, t in ordered]


def top_functions(profiler: cProfile.Profile, n: int = 12) -> list[str]:
    stats = pstats.Stats(profiler)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:n]
    out = []
    for (filename, line, name), (_cc, nc, tottime, _ct, _c) in rows:
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        out.append(f"{tottime * 1000:8.1f} ms  {nc:7d} calls  {short}:{line}({name})")
    return out


# ---- backends -----------------------------------------------------------------------------


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[tuple[Store, Path | None]]:
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        store = await Store.open(f"sqlite:///{path}")
        try:
            yield store, path
        finally:
            await store.close()


@asynccontextmanager
async def postgres_store(url: str) -> AsyncIterator[tuple[Store, Path | None]]:
    import asyncpg

    base = url.rpartition("/")[0]
    admin = f"{base}/postgres".replace("postgresql://", "postgres://", 1)
    name = f"bastion_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    store = await Store.open(f"{base}/{name}")
    try:
        yield store, None
    finally:
        await store.close()
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@dataclass(frozen=True, kw_only=True)
class Options:
    sizes: list[int]
    reps: int
    pg_url: str
    sync_tool: bool


async def bench_backend(
    backend: str, opts: Options, log: Callable[[str], None]
) -> tuple[list[Row], list[str], tuple[float, float]]:
    opener = sqlite_store() if backend == "sqlite" else postgres_store(opts.pg_url)
    rows: list[Row] = []
    top: list[str] = []
    sync = opts.sync_tool
    async with opener as (store, path):
        probe = DiskProbe(store, path)
        timed = Timed(store)
        for _ in range(3):  # warm-up: imports, statement caches, connections, page cache
            await one_run(store, 50, None, timed, None, sync_tool=sync)
        floor_before = await commit_floor(store, path)
        for size in opts.sizes:
            row = Row(backend=backend, size=size)
            for _ in range(opts.reps):
                row.samples.append(await one_run(store, size, None, timed, None, sync_tool=sync))
            # One more run, profiled and probed for disk growth (its time is not reported).
            profiler = cProfile.Profile()
            sample = await one_run(store, size, probe, timed, profiler, sync_tool=sync)
            row.disk_bytes_per_step = (sample.disk_bytes or 0) / sample.steps
            row.profile = breakdown(profiler, sample.steps)
            if size == max(opts.sizes):
                top = top_functions(profiler)
            rows.append(row)
            ms = row.median(lambda s: s.seconds / s.steps) * 1e3
            per = row.median(lambda s: s.journal_bytes / s.steps)
            log(f"{backend:8s} {size:5d} steps: {ms:.3f} ms/step, {per:.0f} B/step")
        floor_after = await commit_floor(store, path)
    return rows, top, (floor_before, floor_after)


# ---- report -------------------------------------------------------------------------------


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


async def machine(pg_url: str | None) -> list[str]:
    cpu = _cpu_model()
    lines = [
        f"- CPUs: {len(os.sched_getaffinity(0))} usable (`nproc`), {os.cpu_count()} online, {cpu}",
        f"- Kernel: {platform.release()}",
        f"- Python: {platform.python_version()} ({sys.implementation.name})",
        f"- SQLite: {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)",
    ]
    if pg_url is not None:
        import asyncpg

        conn = await asyncpg.connect(pg_url.replace("postgresql://", "postgres://", 1))
        try:
            version = await conn.fetchval("SHOW server_version")
            sync = await conn.fetchval("SHOW synchronous_commit")
            fsync = await conn.fetchval("SHOW fsync")
        finally:
            await conn.close()
        lines.append(
            f"- PostgreSQL: {version} on 127.0.0.1 (TCP), fsync={fsync}, synchronous_commit={sync}"
        )
    return lines


def render(
    rows: list[Row],
    machine_lines: list[str],
    tops: dict[str, list[str]],
    command: str,
    sync_tool: bool,
) -> str:
    tool_kind = "a plain (sync) function, run in a worker thread" if sync_tool else "async"
    out = ["# Engine overhead per journal step", ""]
    out += [
        f"Command: `{command}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        *machine_lines,
        "",
        f"Scripted function model, a no-op tool ({tool_kind}; effect `none`), react mode. "
        "ms/step is "
        "the wall time of `Worker.run_once` (claim, read journal, execute to completion, read "
        "back) over the steps stored; median of the repetitions after a warm-up. journal B/step "
        "is `Store.journal_bytes` / steps; disk B/step is the growth of the database over one "
        "extra (untimed) run of that size (SQLite: pages in use after a full WAL checkpoint; "
        "PostgreSQL: `pg_total_relation_size('steps')`, dead tuple versions included, before "
        "autovacuum) over its steps. commit ms/step is the time spent inside `Store.commit`.",
        "",
        "| backend | steps/run | reps | ms/step (median) | min-max | commits/step "
        "| commit ms/step | journal B/step | disk B/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = [s.seconds / s.steps * 1e3 for s in r.samples]
        out.append(
            f"| {r.backend} | {r.samples[0].steps} | {len(r.samples)} "
            f"| {statistics.median(per):.3f} | {min(per):.3f}-{max(per):.3f} "
            f"| {r.median(lambda s: s.commits / s.steps):.2f} "
            f"| {r.median(lambda s: s.commit_seconds / s.steps) * 1e3:.3f} "
            f"| {r.median(lambda s: s.journal_bytes / s.steps):.0f} "
            f"| {r.disk_bytes_per_step:.0f} |"
        )
    out += ["", "## Where the time goes", ""]
    out.append(
        "cProfile self time grouped by package, ms/step, one extra profiled run per size "
        "(profiling inflates Python-heavy groups; compare shares, not absolute values)."
    )
    for r in rows:
        parts = ", ".join(f"{label} {ms:.3f}" for label, ms in r.profile if ms >= 0.005)
        out += ["", f"- **{r.backend}, {r.size} steps**: {parts}"]
    for backend, lines in tops.items():
        title = f"Top functions by self time, {backend}, largest run:"
        out += ["", title, "", "```", *lines, "```"]
    out.append("")
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--sync-tool", action="store_true", help="a plain-function no-op tool")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    opts = Options(
        sizes=[int(s) for s in args.sizes.split(",")],
        reps=args.reps,
        pg_url=os.environ.get("BASTION_BENCH_POSTGRES_URL", DEFAULT_PG),
        sync_tool=args.sync_tool,
    )
    load_before = os.getloadavg()
    rows: list[Row] = []
    tops: dict[str, list[str]] = {}
    floors: list[str] = []
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            parser.error(f"unknown backend {backend!r}")
        got, top, (before, after) = await bench_backend(backend, opts, print)
        rows += got
        tops[backend] = top
        floors.append(
            f"- Floor on {backend}: one-row UPDATE committed alone, median {before:.3f} ms "
            f"before the runs, {after:.3f} ms after (disk and server latency at the time)"
        )
    command = "python bench/engine_bench.py " + " ".join(sys.argv[1:])
    lines = await machine(opts.pg_url if "postgres" in backends else None)
    load_after = os.getloadavg()
    lines.append(
        f"- Load average (1 min) before / after the bench: {load_before[0]:.2f} / "
        f"{load_after[0]:.2f} (the machine is shared; figures move with it)"
    )
    report = render(rows, lines + floors, tops, command, opts.sync_tool)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
