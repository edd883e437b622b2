"""The wall-time limit counts each active second once, and a resumed run sees, at each replayed
turn, the active time the first execution saw there (not the total of later steps)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _engine_kit import make_engine, run_to_stop, scripted

from bastion.core.records import Decision, RunStatus, StepKind, WaitReason
from bastion.engine import Agent, Limits, _loop
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import tool


class _Monotonic:
    """Stands in for the ``time`` module inside the loop: time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_tool_time_counts_once_against_the_wall_time_limit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Monotonic()
    monkeypatch.setattr(_loop, "time", clock)

    @tool(effect="read")
    async def crunch(n: int) -> int:
        clock.now += 10.0  # the tool takes ten seconds
        return n * 2

    model = scripted(
        reply(None, call("crunch", {"n": 1})),
        reply(None, call("crunch", {"n": 2})),
        reply("done"),
    )
    agent = Agent(name="ops", tools=[crunch], limits=Limits(max_wall_seconds=25.0))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("ops", "crunch twice")
    done = await run_to_stop(engine, run.id)
    # Twenty active seconds, under the 25 s limit.
    assert done.status is RunStatus.COMPLETED, done.error
    model.assert_complete()


async def test_a_resumed_run_sees_the_active_time_of_each_replayed_turn(store: Store) -> None:
    ran: list[str] = []

    @tool(effect="read")
    def export(table: str) -> str:
        ran.append(f"export {table}")
        return "exported"

    @tool(effect="write", requires_approval=True)
    def purge(table: str) -> str:
        ran.append(f"purge {table}")
        return "purged"

    model = scripted(reply(None, call("export", {"table": "t"}), call("purge", {"table": "t"})))
    agent = Agent(name="ops", tools=[export, purge], limits=Limits(max_wall_seconds=60.0))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("ops", "export then purge")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.wait_reason is WaitReason.APPROVAL_REQUIRED

    # The export took 90 s of the run's 60 s (recorded so in the journal). The first
    # execution checked the limit only before the model turn, when no time had been used.
    steps = await store.get_steps(run.id)
    (exported,) = [s for s in steps if s.kind is StepKind.TOOL]
    assert exported.finished_at is not None
    slow = exported.model_copy(update={"finished_at": exported.started_at + timedelta(seconds=90)})
    await store.commit(run.id, expected_version=waiting.version, changes={}, steps_to_write=[slow])

    await engine.decide(run.id, Decision(kind="approve"))
    failed = await run_to_stop(engine, run.id)

    # The approved purge ran as the first execution would have; the next turn is refused.
    assert ran == ["export t", "purge t"]
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "run_timeout"
    model.assert_complete()
