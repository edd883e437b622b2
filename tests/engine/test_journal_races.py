"""The journal's writes racing its own lease renewal (the engine's watcher renews the lease
while the run body finishes steps). A step recorded while a renewal is in flight must not be
dropped when the renewal's commit completes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from bastion.core.records import Run, StepKind, StepStatus
from bastion.engine._journal import Journal
from bastion.store import Store


class GatedStore:
    """The real store, except that a commit can be held at a gate: it stands for a slow
    database round trip, so the test decides exactly what happens while it is in flight."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._hold = False
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def hold_next_commit(self) -> None:
        self._hold = True

    async def commit(self, run_id: str, **kwargs: Any) -> int:
        if self._hold:
            self._hold = False
            self.entered.set()
            await self.release.wait()
        return await self.store.commit(run_id, **kwargs)


async def _claimed_journal(store: Store) -> tuple[Run, Journal, GatedStore]:
    now = datetime.now(UTC)
    await store.create_run(Run(id="run_race", agent="a", input="x", created_at=now, updated_at=now))
    run = await store.claim_run("w1", lease_seconds=30.0)
    assert run is not None
    gated = GatedStore(store)
    journal = Journal(cast(Store, gated), run, [], owner="w1", lease_seconds=30.0)
    return run, journal, gated


async def _renewal_in_flight(journal: Journal, gated: GatedStore) -> asyncio.Future[None]:
    gated.hold_next_commit()
    renewal = asyncio.ensure_future(journal.renew_lease())
    await asyncio.wait_for(gated.entered.wait(), 10)
    assert journal._lock.locked()
    return renewal


async def test_a_durable_finish_during_a_lease_renewal_is_written(store: Store) -> None:
    run, journal, gated = await _claimed_journal(store)
    slot = await journal.begin(StepKind.TOOL, "ship", {"item": "a"}, "h1")

    renewal = await _renewal_in_flight(journal, gated)
    finishing = asyncio.ensure_future(journal.finish(slot.step, output="shipped", durable=True))
    for _ in range(5):
        await asyncio.sleep(0)  # the finish is recorded and waits for the journal's lock
    assert not finishing.done()
    gated.release.set()
    await renewal
    await finishing

    (row,) = await store.get_steps(run.id)
    assert row.status is StepStatus.COMPLETED
    assert row.output == "shipped"


async def test_a_held_back_step_during_a_lease_renewal_is_written_by_the_next_flush(
    store: Store,
) -> None:
    run, journal, gated = await _claimed_journal(store)
    slot = await journal.begin(StepKind.MODEL, "m", {"turn": 1}, "h0")

    renewal = await _renewal_in_flight(journal, gated)
    await journal.finish(slot.step, output={"text": "hi"}, durable=False)
    await journal.begin(StepKind.VALIDATION, "v", {}, "h2", durable=False)
    gated.release.set()
    await renewal
    await journal.flush()

    rows = await store.get_steps(run.id)
    assert [(r.step_no, r.status) for r in rows] == [
        (0, StepStatus.COMPLETED),
        (1, StepStatus.STARTED),
    ]
    assert rows[0].output == {"text": "hi"}
