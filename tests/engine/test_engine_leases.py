"""Leases seen from the engine: a worker whose run was taken over stops and writes nothing more;
a worker shutting down hands its in-flight run back to the queue. Both backends."""

from __future__ import annotations

import asyncio
import time

from _engine_kit import make_engine, scripted

from bastion.core.records import RunStatus, StepKind, StepStatus
from bastion.engine import Agent, EngineOptions, Worker
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import ToolContext, tool

OPTIONS = EngineOptions(lease_seconds=5.0, watch_interval=0.05)


def _slow_sync_agent(
    started: asyncio.Event, calls: list[tuple[str, int]], slow: list[bool]
) -> Agent:
    @tool(effect="external", idempotent=True, timeout=120)
    async def transfer(ctx: ToolContext, amount: int) -> str:
        calls.append((ctx.idempotency_key, ctx.attempt))
        started.set()
        if slow[0]:
            await asyncio.sleep(60)
        return f"moved {amount}"

    return Agent(name="ops", tools=[transfer])


async def test_a_worker_whose_run_was_taken_over_stops_and_writes_nothing(store: Store) -> None:
    started = asyncio.Event()
    calls: list[tuple[str, int]] = []
    slow = [True]
    agent = _slow_sync_agent(started, calls, slow)
    model = scripted(reply(None, call("transfer", {"amount": 5})), reply("done"))
    engine = make_engine(store, [agent], model, options=OPTIONS)
    run = await engine.submit("ops", "move 5")

    first = asyncio.ensure_future(Worker(engine, worker_id="w1").run_once(run.id))
    await asyncio.wait_for(started.wait(), 30)
    # w1 stalls past its lease (as far as the store can tell) and w2 takes the run.
    taken = await store.claim_run("w2", lease_seconds=30.0, now=time.time() + 3600, run_id=run.id)
    assert taken is not None and taken.lease_owner == "w2"

    stopped = await asyncio.wait_for(first, 30)
    assert stopped is not None
    assert stopped.status is RunStatus.RUNNING and stopped.lease_owner == "w2"
    after = await store.get_run(run.id)
    assert after.version == taken.version, "w1 wrote after losing its lease"
    tool_step = [s for s in await store.get_steps(run.id) if s.kind is StepKind.TOOL]
    assert [s.status for s in tool_step] == [StepStatus.STARTED]

    # w2 carries on: the idempotent transfer is redone under the same idempotency key.
    slow[0] = False
    done = await engine.execute(taken, owner="w2")
    assert done.status is RunStatus.COMPLETED, done.error
    assert [key for key, _ in calls] == [f"{run.id}:1", f"{run.id}:1"]
    model.assert_complete()


async def test_a_worker_shutting_down_hands_its_run_back(store: Store) -> None:
    started = asyncio.Event()
    calls: list[tuple[str, int]] = []
    slow = [True]
    agent = _slow_sync_agent(started, calls, slow)
    model = scripted(reply(None, call("transfer", {"amount": 5})), reply("done"))
    engine = make_engine(store, [agent], model, options=OPTIONS)
    run = await engine.submit("ops", "move 5")

    stop = asyncio.Event()
    serving = asyncio.ensure_future(Worker(engine, poll_interval=0.05).serve(stop))
    await asyncio.wait_for(started.wait(), 30)
    stop.set()
    await asyncio.wait_for(serving, 30)

    released = await store.get_run(run.id)
    assert released.status is RunStatus.PENDING
    assert released.lease_owner is None
    # The next worker picks it up at once (no lease to wait out) and finishes it.
    slow[0] = False
    done = await Worker(engine).run_once(run.id)
    assert done is not None and done.status is RunStatus.COMPLETED, done
    assert len(calls) == 2
    model.assert_complete()


async def test_a_run_of_an_agent_this_worker_does_not_know_is_dead_lettered(
    store: Store,
) -> None:
    """A run whose agent was removed from the deployment must not kill the worker's loops."""

    @tool(effect="read")
    def ping() -> str:
        return "pong"

    ghost = Agent(name="ghost", tools=[ping])
    ops = Agent(name="ops", tools=[ping])
    old = make_engine(store, [ghost, ops], scripted(), options=OPTIONS)
    orphan = await old.submit("ghost", "boo")
    model = scripted(reply("pong"))
    engine = make_engine(store, [ops], model, options=OPTIONS)

    stop = asyncio.Event()
    serving = asyncio.ensure_future(Worker(engine, poll_interval=0.02).serve(stop))
    try:
        live = await engine.submit("ops", "ping")
        for _ in range(500):
            if (await store.get_run(live.id)).status is RunStatus.COMPLETED:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)

    assert (await store.get_run(live.id)).status is RunStatus.COMPLETED
    dead = await store.get_run(orphan.id)
    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["code"] == "agent_not_found"
    assert dead.lease_owner is None
    (letter,) = await store.list_dead_letters()
    assert letter.run_id == orphan.id
