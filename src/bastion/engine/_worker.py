"""Workers: claim runnable runs from the store under a lease and execute them.

Owns: the claim loop and its concurrency. Many worker processes may share one PostgreSQL
store; a run whose worker died is claimed again once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bastion.core.errors import StoreError
from bastion.core.records import Run
from bastion.engine._engine import Engine, default_worker_id

log = logging.getLogger("bastion.worker")


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        poll_interval: float = 0.25,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.executed = 0

    async def run_once(self, run_id: str | None = None) -> Run | None:
        """Claim one runnable run (``run_id`` only, if given) and execute it to its next stop."""
        claimed = await self.engine.store.claim_run(
            self.worker_id, lease_seconds=self.engine.options.lease_seconds, run_id=run_id
        )
        if claimed is None:
            return None
        self.executed += 1
        return await self.engine.execute(claimed, owner=self.worker_id)

    async def drain(self) -> int:
        """Execute runs until none is runnable; returns how many executions happened."""
        count = 0
        while await self.run_once() is not None:
            count += 1
        return count

    async def serve(self, stop: asyncio.Event) -> None:
        """Run ``concurrency`` claim loops until ``stop`` is set; in-flight runs are released."""
        loops = [asyncio.ensure_future(self._loop(stop)) for _ in range(self.concurrency)]
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                ran = await self.run_once()
            except StoreError as exc:
                log.warning("worker %s: store unavailable, backing off: %s", self.worker_id, exc)
                ran = None
            if ran is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)
