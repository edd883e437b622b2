"""Two worker processes on one store: a run is never executed by two workers at once, every
effect happens once, and (PostgreSQL) a killed worker's run is finished by the other once its
lease expires."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from _crash_worker import build_agents, read_lines

from bastion.core.records import RunStatus
from bastion.engine import Engine
from bastion.store import Store

POOL_WORKER = Path(__file__).with_name("_pool_worker.py")


async def _never_called(model: str, request: Any) -> Any:
    raise AssertionError("the test process must not execute runs")


class Pool:
    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.effects = tmp_path / "effects.log"
        self.model_log = tmp_path / "model.log"
        self.tmp = tmp_path
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, **extra: Any) -> asyncio.subprocess.Process:
        config = {
            "store_url": self.url,
            "effects": str(self.effects),
            "model_log": str(self.model_log),
            "run_id": None,
            **extra,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(POOL_WORKER),
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            _, err = await proc.communicate()
            raise AssertionError(f"worker {name} did not start: {err.decode()[-3000:]}")
        return proc

    async def go(self, name: str) -> None:
        stdin = self.procs[name].stdin
        assert stdin is not None
        stdin.write(b"go\n")
        await stdin.drain()

    async def finish(self, proc: asyncio.subprocess.Process) -> int:
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode is not None
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"worker exited {proc.returncode}: {err.decode()[-3000:]}")
        return proc.returncode

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.kill()


def _intervals(effects: Path) -> dict[str, list[tuple[float, float, str, str]]]:
    """Effects by run: (start, end, pid, step key)."""
    by_run: dict[str, list[tuple[float, float, str, str]]] = defaultdict(list)
    for _item, key, pid, start, end in read_lines(effects):
        by_run[key.rsplit(":", 1)[0]].append((float(start), float(end), pid, key))
    return by_run


async def test_two_workers_never_run_the_same_run_at_once(store_url: str, tmp_path: Path) -> None:
    """On PostgreSQL (SKIP LOCKED) and on one SQLite file shared by two processes."""
    store = await Store.open(store_url)
    pool = Pool(store_url, tmp_path)
    try:
        engine = Engine(store=store, complete=_never_called, agents=build_agents(pool.effects))
        run_ids = [(await engine.submit("shipper", f"order {i}")).id for i in range(20)]
        workers = [
            await pool.start(name, lease_seconds=5.0, tool_delay=0.03) for name in ("a", "b")
        ]
        await pool.go("a")
        await pool.go("b")
        codes = [await pool.finish(w) for w in workers]
        assert codes == [0, 0]

        for run_id in run_ids:
            run = await store.get_run(run_id)
            assert run.status is RunStatus.COMPLETED, (run_id, run.error)
        by_run = _intervals(pool.effects)
        assert sorted(by_run) == sorted(run_ids)
        for run_id, effects in by_run.items():
            # Each of the run's two effects happened once...
            assert Counter(key for *_, key in effects) == {f"{run_id}:1": 1, f"{run_id}:3": 1}
            # ...and never while another execution of the same run was inside a tool.
            effects.sort()
            for (_, end, _, _), (start, _, _, _) in itertools.pairwise(effects):
                assert end <= start, f"run {run_id} ran in two places at once: {effects}"
        pids = {pid for effects in by_run.values() for _, _, pid, _ in effects}
        assert len(pids) == 2, "both workers should have taken runs"
    finally:
        pool.kill_all()
        await store.close()


@pytest.mark.postgres
async def test_a_killed_workers_run_is_resumed_by_the_other(
    pg_database: str, tmp_path: Path
) -> None:
    store = await Store.open(pg_database)
    pool = Pool(pg_database, tmp_path)
    try:
        engine = Engine(store=store, complete=_never_called, agents=build_agents(pool.effects))
        run_ids = [(await engine.submit("payer", f"order {i}")).id for i in range(4)]
        # Worker a dies after journaling the start of its first run's second payment.
        doomed = await pool.start("a", lease_seconds=1.0, kill_point="started", kill_step=3)
        survivor = await pool.start("b", lease_seconds=1.0)
        await pool.go("a")
        assert await pool.finish(doomed) == -signal.SIGKILL
        orphans = [r for r in await store.list_runs(status=RunStatus.RUNNING)]
        assert len(orphans) == 1
        orphan = orphans[0]
        await pool.go("b")
        assert await pool.finish(survivor) == 0

        for run_id in run_ids:
            run = await store.get_run(run_id)
            assert run.status is RunStatus.COMPLETED, (run_id, run.error)
        by_run = _intervals(pool.effects)
        for run_id in run_ids:
            keys = Counter(key for *_, key in by_run[run_id])
            assert keys == {f"{run_id}:1": 1, f"{run_id}:3": 1}
        # The orphan's first payment was made by the dead worker, its second by the survivor.
        pids = [pid for _, _, pid, _ in sorted(by_run[orphan.id])]
        assert pids[0] == str(doomed.pid) and pids[1] == str(survivor.pid)
        resumed = await store.get_run(orphan.id)
        assert resumed.attempt == 2
    finally:
        pool.kill_all()
        await store.close()
