"""Optimistic locking and leases on both backends: of concurrent commits on one run version,
exactly one wins; a worker whose lease was taken cannot write any more."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bastion.core.errors import ConcurrentUpdate, LeaseLost
from bastion.core.ids import new_id
from bastion.core.records import Run, RunStatus, Step, StepKind, StepStatus
from bastion.store import Store


def _run() -> Run:
    now = datetime.now(UTC)
    return Run(id=new_id("run"), agent="a", input="x", created_at=now, updated_at=now)


def _step(run_id: str, no: int, name: str) -> Step:
    return Step(
        run_id=run_id,
        step_no=no,
        kind=StepKind.NOTE,
        name=name,
        status=StepStatus.COMPLETED,
        started_at=datetime.now(UTC),
    )


async def _commit(store: Store, run_id: str, version: int, who: str) -> int:
    return await store.commit(
        run_id,
        expected_version=version,
        changes={"output": who},
        steps_to_write=[_step(run_id, 0, who)],
    )


async def test_concurrent_commits_on_one_version_exactly_one_wins(store_url: str) -> None:
    # Separate Store objects: separate connections, as separate processes would have.
    stores = [await Store.open(store_url) for _ in range(4)]
    try:
        run = await stores[0].create_run(_run())
        results = await asyncio.gather(
            *(_commit(s, run.id, run.version, f"w{i}") for i, s in enumerate(stores)),
            return_exceptions=True,
        )
        winners = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert all(isinstance(r, ConcurrentUpdate) for r in losers), losers
        assert results[winners[0]] == run.version + 1

        stored = await stores[0].get_run(run.id)
        assert stored.version == run.version + 1
        # The winner's run change and its step were written together; no loser's were.
        assert stored.output == f"w{winners[0]}"
        assert [s.name for s in await stores[0].get_steps(run.id)] == [f"w{winners[0]}"]
    finally:
        for s in stores:
            await s.close()


async def test_a_stale_version_is_refused(store: Store) -> None:
    run = await store.create_run(_run())
    v2 = await _commit(store, run.id, run.version, "first")
    with pytest.raises(ConcurrentUpdate) as info:
        await _commit(store, run.id, run.version, "stale")
    assert info.value.details["actual"] == v2
    assert (await store.get_run(run.id)).output == "first"


async def test_a_commit_by_a_worker_whose_lease_was_taken_gets_lease_lost(store: Store) -> None:
    run = await store.create_run(_run())
    first = await store.claim_run("w1", lease_seconds=0.0)
    assert first is not None and first.lease_owner == "w1"
    assert first.status is RunStatus.RUNNING
    # w1's lease expired (zero seconds); w2 takes the run over.
    taken = await store.claim_run("w2", lease_seconds=30.0)
    assert taken is not None and taken.id == run.id and taken.lease_owner == "w2"
    assert taken.version == first.version + 1

    for version in (first.version, taken.version):
        with pytest.raises(LeaseLost):
            await store.commit(
                run.id,
                expected_version=version,
                owner="w1",
                changes={"status": RunStatus.COMPLETED, "output": "w1 was here"},
                steps_to_write=[_step(run.id, 0, "w1")],
            )
    stored = await store.get_run(run.id)
    assert stored.status is RunStatus.RUNNING and stored.lease_owner == "w2"
    assert stored.output is None
    assert await store.get_steps(run.id) == []
    # The new owner writes normally.
    await store.commit(run.id, expected_version=taken.version, owner="w2", changes={"output": "w2"})
    assert (await store.get_run(run.id)).output == "w2"


async def test_a_live_lease_is_not_claimed_twice(store: Store) -> None:
    run = await store.create_run(_run())
    first = await store.claim_run("w1", lease_seconds=30.0)
    assert first is not None and first.id == run.id
    assert await store.claim_run("w2", lease_seconds=30.0) is None
    assert await store.claim_run("w2", lease_seconds=30.0, run_id=run.id) is None


async def test_concurrent_claims_hand_each_run_to_one_worker(store_url: str) -> None:
    stores = [await Store.open(store_url) for _ in range(3)]
    try:
        ids = {(await stores[0].create_run(_run())).id for _ in range(9)}

        async def claim_all(s: Store, owner: str) -> list[str]:
            got: list[str] = []
            while (run := await s.claim_run(owner, lease_seconds=30.0)) is not None:
                got.append(run.id)
            return got

        claimed = await asyncio.gather(*(claim_all(s, f"w{i}") for i, s in enumerate(stores)))
        flat = [run_id for got in claimed for run_id in got]
        assert sorted(flat) == sorted(ids)
    finally:
        for s in stores:
            await s.close()
