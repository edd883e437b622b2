"""A clock for tests: ``now()`` and ``sleep()`` that move only when the test says so."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        """Record the wait and advance time at once, yielding control like a real sleep."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)
