"""The journal's writes racing its own lease renewal (the engine's watcher renews the lease
while the run body finishes steps). A step recorded while a renewal is in flight must not be
dropped when the renewal's commit completes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bastion.core.records import Run, StepKind, StepStatus
from bastion.engine._journal import Journal
from bastion.store import Store


async def _claimed_journal(store: Store) -> tuple[Run, Journal]:
    now = datetime.now(UTC)
    await store.create_run(Run(id="run_race", agent="a", input="x", created_at=now, updated_at=now))
    run = await store.claim_run("w1", lease_seconds=30.0)
    assert run is not None
    return run, Journal(store, run, [], owner="w1", lease_seconds=30.0)


async def _renewal_in_flight(journal: Journal) -> asyncio.Future[None]:
    renewal = asyncio.ensure_future(journal.renew_lease())
    for _ in range(100):
        await asyncio.sleep(0)
        if journal._lock.locked():
            return renewal
    raise AssertionError("the renewal never started its commit")


async def test_a_durable_finish_during_a_lease_renewal_is_written(store: Store) -> None:
    run, journal = await _claimed_journal(store)
    slot = await journal.begin(StepKind.TOOL, "ship", {"item": "a"}, "h1")

    renewal = await _renewal_in_flight(journal)
    await journal.finish(slot.step, output="shipped", durable=True)
    await renewal

    (row,) = await store.get_steps(run.id)
    assert row.status is StepStatus.COMPLETED
    assert row.output == "shipped"


async def test_a_held_back_step_during_a_lease_renewal_is_written_by_the_next_flush(
    store: Store,
) -> None:
    run, journal = await _claimed_journal(store)
    slot = await journal.begin(StepKind.MODEL, "m", {"turn": 1}, "h0")

    renewal = await _renewal_in_flight(journal)
    await journal.finish(slot.step, output={"text": "hi"}, durable=False)
    await journal.begin(StepKind.VALIDATION, "v", {}, "h2", durable=False)
    await renewal
    await journal.flush()

    rows = await store.get_steps(run.id)
    assert [(r.step_no, r.status) for r in rows] == [
        (0, StepStatus.COMPLETED),
        (1, StepStatus.STARTED),
    ]
    assert rows[0].output == {"text": "hi"}
