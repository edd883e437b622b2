"""Cancel means stop. A cancelled run stops at its next phase boundary: a model call or a
read-only tool in flight is abandoned at once; a tool that may change the world is let finish
and its end is journaled (or it becomes ``outcome_unknown`` if it times out), never both
cancelled and silently completed. A cancel from another process is seen by the executing
worker's poll; a worker that shuts down hands its runs back after their in-flight effects.
Both backends."""

from __future__ import annotations

import asyncio

from _engine_kit import function_model, make_engine, scripted

from bastion.core.messages import ModelRequest, ModelResponse
from bastion.core.records import RunStatus, StepKind, StepStatus
from bastion.engine import Agent, Engine, EngineOptions, Worker
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import tool

OPTIONS = EngineOptions(lease_seconds=5.0, watch_interval=0.05, cancel_poll_interval=0.02)
#: Bounds that only keep a broken test from hanging; nothing here measures time.
HANG = 30


def _tool_steps(steps: list) -> list:  # type: ignore[type-arg]
    return [s for s in steps if s.kind is StepKind.TOOL]


async def test_cancel_abandons_a_read_only_tool_at_once(store: Store) -> None:
    started = asyncio.Event()
    finished: list[bool] = []

    @tool(effect="read", timeout=120)
    async def scan(table: str) -> str:
        started.set()
        await asyncio.sleep(60)
        finished.append(True)
        return "scanned"

    model = scripted(reply(None, call("scan", {"table": "orders"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[scan])], model, options=OPTIONS)
    run = await engine.submit("ops", "scan orders")

    execution = asyncio.ensure_future(Worker(engine).run_once(run.id))
    await asyncio.wait_for(started.wait(), HANG)
    await engine.cancel(run.id, reason="wrong table")
    stopped = await asyncio.wait_for(execution, HANG)

    assert stopped is not None
    assert stopped.status is RunStatus.CANCELLED
    assert stopped.error == {"code": "cancelled", "message": "wrong table"}
    assert stopped.lease_owner is None
    assert finished == []
    assert len(model.calls) == 1
    (step,) = _tool_steps(await store.get_steps(run.id))
    assert step.status is StepStatus.STARTED
    assert await Worker(engine).run_once(run.id) is None  # not claimable again


async def test_a_write_tool_in_flight_finishes_and_is_journaled_then_the_run_stops(
    store: Store,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    shipped: list[str] = []

    @tool(effect="write", timeout=120)
    async def ship(item: str) -> str:
        started.set()
        await release.wait()
        shipped.append(item)
        return f"shipped {item}"

    model = scripted(reply(None, call("ship", {"item": "a"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[ship])], model, options=OPTIONS)
    run = await engine.submit("ops", "ship a")

    execution = asyncio.ensure_future(Worker(engine).run_once(run.id))
    await asyncio.wait_for(started.wait(), HANG)
    cancelled = await engine.cancel(run.id)
    assert cancelled.status is RunStatus.CANCELLED
    assert not execution.done()  # the call is still under way
    release.set()
    stopped = await asyncio.wait_for(execution, HANG)

    assert stopped is not None and stopped.status is RunStatus.CANCELLED
    assert stopped.lease_owner is None
    assert shipped == ["a"]
    (step,) = _tool_steps(await store.get_steps(run.id))
    assert step.status is StepStatus.COMPLETED and step.output == "shipped a"
    assert len(model.calls) == 1  # nothing after the boundary


async def test_a_write_tool_that_times_out_after_cancel_is_outcome_unknown(store: Store) -> None:
    started = asyncio.Event()

    @tool(effect="write", timeout=0.3)
    async def ship(item: str) -> str:
        started.set()
        await asyncio.sleep(60)
        return "shipped"

    model = scripted(reply(None, call("ship", {"item": "a"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[ship])], model, options=OPTIONS)
    run = await engine.submit("ops", "ship a")

    execution = asyncio.ensure_future(Worker(engine).run_once(run.id))
    await asyncio.wait_for(started.wait(), HANG)
    await engine.cancel(run.id)
    stopped = await asyncio.wait_for(execution, HANG)

    assert stopped is not None and stopped.status is RunStatus.CANCELLED
    assert stopped.wait_reason is None
    (step,) = _tool_steps(await store.get_steps(run.id))
    assert step.status is StepStatus.OUTCOME_UNKNOWN
    assert step.error is not None and step.error["code"] == "tool_timeout"


async def test_a_cancel_from_another_process_stops_a_model_call(store: Store) -> None:
    """The canceller is another engine over the same store (as the CLI would be): the
    executing engine sees it in its poll and abandons the model call it waits on."""
    asked = asyncio.Event()

    async def slow(request: ModelRequest) -> ModelResponse:
        asked.set()
        await asyncio.sleep(60)
        return reply("too late")

    model = function_model(slow)
    agent = Agent(name="ops")
    engine = make_engine(store, [agent], model, options=OPTIONS)
    other: Engine = make_engine(store, [agent], scripted(), options=OPTIONS)
    run = await engine.submit("ops", "think hard")

    execution = asyncio.ensure_future(Worker(engine).run_once(run.id))
    await asyncio.wait_for(asked.wait(), HANG)
    await other.cancel(run.id, reason="not needed")
    stopped = await asyncio.wait_for(execution, HANG)

    assert stopped is not None and stopped.status is RunStatus.CANCELLED
    assert stopped.lease_owner is None
    assert stopped.error == {"code": "cancelled", "message": "not needed"}


async def test_shutdown_hands_the_run_back_after_the_write_in_flight(store: Store) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    shipped: list[str] = []

    @tool(effect="write", timeout=120)
    async def ship(item: str) -> str:
        started.set()
        await release.wait()
        shipped.append(item)
        return "shipped"

    model = scripted(reply(None, call("ship", {"item": "a"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[ship])], model, options=OPTIONS)
    run = await engine.submit("ops", "ship a")

    stop = asyncio.Event()
    serving = asyncio.ensure_future(Worker(engine).serve(stop))
    await asyncio.wait_for(started.wait(), HANG)
    stop.set()
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(serving, HANG)

    back = await store.get_run(run.id)
    assert back.status is RunStatus.PENDING and back.lease_owner is None
    (step,) = _tool_steps(await store.get_steps(run.id))
    assert step.status is StepStatus.COMPLETED  # journaled: the next worker will not redo it
    assert shipped == ["a"]

    # The next worker finishes the run without calling the tool again.
    done = await Worker(engine).run_once(run.id)
    assert done is not None and done.status is RunStatus.COMPLETED, done and done.error
    assert shipped == ["a"]
