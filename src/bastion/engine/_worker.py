"""Workers: claim runnable runs from the store under a lease and execute them, supervised.

Owns: the claim loops and their concurrency, keeping them alive (an unexpected error on one
run dead-letters that run and the loop goes on; a loop that dies anyway is restarted), the
worker's health report, and reclaiming the runs of workers that died on this host. Many
worker processes may share one PostgreSQL store; a run whose worker died elsewhere is claimed
again once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.core.errors import ConcurrentUpdate, CorruptRecord, LeaseLost, StoreError
from bastion.core.records import Run
from bastion.engine._engine import Engine
from bastion.engine._identity import default_worker_id, local_prefix, owner_is_dead

log = logging.getLogger("bastion.worker")

#: How long a restarted loop waits, doubling per restart in a row up to the cap.
_RESTART_DELAY = 0.1
_RESTART_CAP = 5.0


@dataclass(kw_only=True)
class LoopHealth:
    """What the health report says about one supervised loop."""

    alive: bool = False
    restarts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(kw_only=True)
class WorkerHealth:
    worker_id: str
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    executed: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    loops: dict[str, LoopHealth] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return bool(self.loops) and all(loop.alive for loop in self.loops.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "pid": self.pid,
            "healthy": self.healthy,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "executed": self.executed,
            "dead_lettered": self.dead_lettered,
            "reclaimed": self.reclaimed,
            "loops": {
                name: {
                    "alive": h.alive,
                    "restarts": h.restarts,
                    "last_error": h.last_error,
                    "last_error_at": h.last_error_at,
                }
                for name, h in sorted(self.loops.items())
            },
        }


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        poll_interval: float = 0.25,
        health_file: Path | None = None,
        health_interval: float = 5.0,
        reclaim_local: bool = True,
        retention_interval: float = 600.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.health_file = health_file
        self.health_interval = health_interval
        self.reclaim_local = reclaim_local
        self.retention_interval = retention_interval
        self.health = WorkerHealth(worker_id=self.worker_id)

    @property
    def executed(self) -> int:
        return self.health.executed

    async def run_once(self, run_id: str | None = None) -> Run | None:
        """Claim one runnable run (``run_id`` only, if given) and execute it to its next stop.
        A run that cannot be read or that breaks the engine is moved to dead letters with the
        error, and the next runnable run is claimed instead."""
        while True:
            try:
                claimed = await self.engine.store.claim_run(
                    self.worker_id,
                    lease_seconds=self.engine.options.lease_seconds,
                    run_id=run_id,
                )
            except CorruptRecord as exc:
                await self._quarantine(exc.run_id, exc.to_dict())
                if run_id is not None:
                    return None
                continue
            if claimed is None:
                return None
            self.health.executed += 1
            try:
                return await self.engine.execute(claimed, owner=self.worker_id)
            except (asyncio.CancelledError, StoreError):
                raise
            except Exception as exc:  # a bug on this one run: keep it, with the evidence
                log.exception("run %s: the engine failed outside the run loop", claimed.id)
                await self._quarantine(claimed.id, _internal_error(exc))
                if run_id is not None:
                    return await self.engine.store.get_run(claimed.id)

    async def _quarantine(self, run_id: str | None, error: dict[str, Any]) -> None:
        if run_id is None:
            return
        log.error("run %s: moved to dead letters: %s", run_id, error.get("message"))
        self.health.dead_lettered += 1
        await self.engine.store.quarantine_run(run_id, error)

    async def drain(self) -> int:
        """Execute runs until none is runnable; returns how many executions happened."""
        count = 0
        while await self.run_once() is not None:
            count += 1
        return count

    # ---- serving ----------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Run ``concurrency`` supervised claim loops until ``stop`` is set; in-flight runs are
        handed back. First reclaims the runs of workers that died on this host."""
        if self.reclaim_local:
            with contextlib.suppress(StoreError):
                await self.reclaim_dead_local()
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            f"claim-{i}": lambda: self._claim_loop(stop) for i in range(self.concurrency)
        }
        if self.health_file is not None:
            loops["health"] = lambda: self._health_loop(stop)
        if self.engine.sealing is not None:
            loops["retention"] = lambda: self._retention_loop(stop)
        tasks = [
            asyncio.ensure_future(self._supervise(name, body, stop)) for name, body in loops.items()
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for health in self.health.loops.values():
                health.alive = False
            self._write_health()

    async def _supervise(
        self, name: str, body: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        """Keep ``body`` running until ``stop``: a loop that dies is logged and restarted."""
        health = self.health.loops.setdefault(name, LoopHealth())
        delay = _RESTART_DELAY
        while not stop.is_set():
            health.alive = True
            started = time.monotonic()
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # supervised: recorded, then the loop starts again
                health.alive = False
                health.restarts += 1
                health.last_error = f"{type(exc).__name__}: {exc}"
                health.last_error_at = time.time()
                log.exception("worker %s: loop %s died; restarting it", self.worker_id, name)
                if time.monotonic() - started > 60:
                    delay = _RESTART_DELAY
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, _RESTART_CAP)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                ran = await self.run_once()
            except StoreError as exc:
                log.warning("worker %s: store unavailable, backing off: %s", self.worker_id, exc)
                ran = None
            if ran is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def _retention_loop(self, stop: asyncio.Event) -> None:
        """Destroy the sealed data of runs whose retention ended, every ``retention_interval``."""
        while not stop.is_set():
            try:
                destroyed = await self.engine.destroy_expired_seals()
            except StoreError as exc:
                log.warning("worker %s: retention sweep failed: %s", self.worker_id, exc)
            else:
                if destroyed:
                    log.info("destroyed the sealed data of %d run(s) past retention", destroyed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retention_interval)

    async def _health_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._write_health()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.health_interval)

    def _write_health(self) -> None:
        """Replace the health file atomically (readers never see half a report)."""
        if self.health_file is None:
            return
        tmp = self.health_file.with_name(self.health_file.name + ".tmp")
        tmp.write_text(json.dumps(self.health.to_dict(), indent=2))
        tmp.replace(self.health_file)

    # ---- workers that died on this host -------------------------------------------------

    async def reclaim_dead_local(self) -> int:
        """Expire the leases of runs held by workers of this host that no longer exist (their
        process is gone, or it is another process with the same pid), so they are claimed now
        instead of when the lease runs out. Returns how many were freed."""
        freed = 0
        for run in await self.engine.store.leased_by_prefix(local_prefix()):
            if run.lease_owner is None or run.lease_owner == self.worker_id:
                continue
            if not owner_is_dead(run.lease_owner):
                continue
            try:
                await self.engine.store.commit(
                    run.id,
                    expected_version=run.version,
                    owner=run.lease_owner,
                    changes={"lease_expires_at": 0.0},
                )
            except (ConcurrentUpdate, LeaseLost):
                continue
            log.info("run %s: its worker %s is gone; reclaimed", run.id, run.lease_owner)
            freed += 1
        self.health.reclaimed += freed
        return freed


def read_health(path: Path, *, max_age: float) -> tuple[bool, list[str], dict[str, Any]]:
    """Read a worker's health file: (healthy, problems, report)."""
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        return False, [f"no health file at {path} (is the worker running with it?)"], {}
    except (OSError, ValueError) as exc:
        return False, [f"cannot read {path}: {exc}"], {}
    problems: list[str] = []
    age = time.time() - float(report.get("updated_at", 0))
    if age > max_age:
        problems.append(f"the report is {age:.0f}s old (the worker stopped or hangs)")
    for name, loop in sorted((report.get("loops") or {}).items()):
        if not loop.get("alive"):
            problems.append(f"loop {name} is not alive (last error: {loop.get('last_error')})")
    if not report.get("loops"):
        problems.append("the report lists no loops")
    return not problems, problems, report


def _internal_error(exc: BaseException) -> dict[str, Any]:
    return {
        "code": "internal_error",
        "message": f"{type(exc).__name__}: {exc}",
        "hint": "This is a bug in Bastion or a tool; the traceback is kept with the run.",
        "details": {"traceback": traceback.format_exc(limit=20)},
    }
