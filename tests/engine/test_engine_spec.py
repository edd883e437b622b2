"""Runs execute the spec they were started with. A deploy that edits an agent's instructions
or limits does not change runs in flight; a tool whose contract changed stops the run with
``spec_changed`` when it needs it, and ``Engine.migrate`` moves it on deliberately (a journaled
note step); an agent version kept deployed serves the runs started on it. A journal that
disagrees with the code is still a ``NondeterminismError``. Both backends."""

from __future__ import annotations

import pytest
from _engine_kit import make_engine, run_to_stop, scripted

from bastion.core.errors import InvalidState
from bastion.core.records import Decision, RunStatus, StepKind, WaitReason
from bastion.engine import Agent, Limits
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import tool


@tool(effect="write", requires_approval=True)
def refund(order_id: str) -> str:
    return f"refunded {order_id}"


async def test_a_deploy_that_edits_instructions_does_not_change_a_run_in_flight(
    store: Store,
) -> None:
    v1 = Agent(name="ops", instructions="Refund what is asked.", tools=[refund])
    model = scripted(reply(None, call("refund", {"order_id": "A1"})))
    engine = make_engine(store, [v1], model)
    run = await engine.submit("ops", "refund A1")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.wait_reason is WaitReason.APPROVAL_REQUIRED

    # A deploy changes the agent's instructions and limits while the run waits.
    v2 = Agent(
        name="ops",
        instructions="Refund only paid orders.",
        tools=[refund],
        limits=Limits(max_turns=1),
    )
    model_v2 = scripted(reply("done"))
    engine_v2 = make_engine(store, [v2], model_v2)
    await engine_v2.decide(run.id, Decision(kind="approve"))
    done = await run_to_stop(engine_v2, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    # The model still sees the instructions the run started with, and the old turn limit
    # (max_turns=1 would have stopped this second turn).
    (request,) = model_v2.calls
    assert request.messages[0].content == "Refund what is asked."
    # New runs get the new definition.
    fresh = await engine_v2.submit("ops", "refund A2")
    assert fresh.spec["instructions"] == "Refund only paid orders."


async def test_a_changed_tool_contract_stops_the_run_until_it_is_migrated(store: Store) -> None:
    @tool(effect="read")
    def lookup(order_id: str) -> str:
        return "paid"

    v1 = Agent(name="ops", instructions="v1", tools=[lookup, refund])
    model = scripted(
        reply(None, call("lookup", {"order_id": "A1"})),
        reply(None, call("refund", {"order_id": "A1"})),
    )
    engine = make_engine(store, [v1], model)
    run = await engine.submit("ops", "refund A1")
    waiting = await run_to_stop(engine, run.id)  # approval of the refund
    assert waiting.wait_reason is WaitReason.APPROVAL_REQUIRED
    await engine.decide(run.id, Decision(kind="approve"))

    # v2 changes the refund tool's contract (a new required argument).
    @tool(name="refund", effect="write", requires_approval=True)
    def refund_v2(order_id: str, reason: str = "") -> str:
        return f"refunded {order_id} ({reason})"

    v2 = Agent(name="ops", instructions="v2", tools=[lookup, refund_v2])
    model_v2 = scripted(reply("done"))
    engine_v2 = make_engine(store, [v2], model_v2)
    stopped = await run_to_stop(engine_v2, run.id)
    assert stopped.status is RunStatus.DEAD_LETTER
    assert stopped.error is not None and stopped.error["code"] == "spec_changed"
    assert "refund" in stopped.error["message"] and "contract changed" in stopped.error["message"]

    with pytest.raises(InvalidState):
        await engine.migrate(run.id)  # v1 is that run's definition already
    moved = await engine_v2.migrate(run.id, by="alice", reason="refund takes a reason now")
    assert moved.status is RunStatus.PENDING
    assert moved.spec["instructions"] == "v2"
    # The approval was given for the old refund: under the new definition it is asked again.
    again = await run_to_stop(engine_v2, run.id)
    assert again.wait_reason is WaitReason.APPROVAL_REQUIRED, again.error
    await engine_v2.decide(run.id, Decision(kind="approve", by="alice"))
    done = await run_to_stop(engine_v2, run.id)
    assert done.status is RunStatus.COMPLETED, done.error

    steps = await store.get_steps(run.id)
    notes = [s for s in steps if s.kind is StepKind.NOTE]
    assert len(notes) == 1 and notes[0].input["by"] == "alice"
    assert notes[0].output["previous"]["instructions"] == "v1"
    tool_steps = [s for s in steps if s.kind is StepKind.TOOL]
    assert [s.output for s in tool_steps] == ["paid", "refunded A1 ()"]
    # From the note on the model sees the new instructions.
    assert model_v2.calls[0].messages[0].content == "v2"
    letters = await store.list_dead_letters(include_resolved=True)
    assert [d.resolution for d in letters] == ["migrated"]


async def test_a_migrated_run_replays_deterministically(store: Store) -> None:
    """After a migration the journal holds steps of two specs; replaying it from the start
    (what a crashed worker's successor does) meets the note at the same point."""

    @tool(effect="read")
    def lookup(order_id: str) -> str:
        return "paid"

    v1 = Agent(name="ops", instructions="v1", tools=[lookup])
    engine = make_engine(store, [v1], scripted(reply(None, call("lookup", {"order_id": "A"}))))
    run = await engine.submit("ops", "look A up")
    current = await store.get_run(run.id)
    # Park it after the lookup as if dead-lettered by a failure in the next model call.
    first = await run_to_stop(
        make_engine(
            store,
            [v1],
            scripted(
                reply(None, call("lookup", {"order_id": "A"})),
                RuntimeError("provider exploded"),  # type: ignore[arg-type]
            ),
        ),
        run.id,
    )
    assert first.status is RunStatus.DEAD_LETTER, first.error
    assert current.id == first.id

    @tool(name="lookup", effect="read")
    def lookup_v2(order_id: str, region: str = "eu") -> str:
        return "paid (eu)"

    v2 = Agent(name="ops", instructions="v2", tools=[lookup_v2])
    engine_v2 = make_engine(store, [v2], scripted(reply("answer")))
    await engine_v2.migrate(run.id)
    done = await run_to_stop(engine_v2, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == "answer"

    # Replaying the whole journal again finds every step where it was recorded.
    before = [(s.kind, s.name, s.input_hash) for s in await store.get_steps(run.id)]
    current = await store.get_run(run.id)
    await store.commit(
        run.id,
        expected_version=current.version,
        changes={"status": RunStatus.DEAD_LETTER, "error": {"code": "x", "message": "x"}},
    )
    final_step = len(before) - 1
    await engine_v2.replay(run.id, from_step=final_step)
    again = await run_to_stop(engine_v2, run.id)
    assert again.status is RunStatus.COMPLETED, again.error
    after = [(s.kind, s.name, s.input_hash) for s in await store.get_steps(run.id)]
    assert after == before


async def test_a_kept_version_serves_the_runs_started_on_it(store: Store) -> None:
    calls: list[str] = []

    @tool(name="refund", effect="write", requires_approval=True)
    def refund_v1(order_id: str) -> str:
        calls.append(f"v1 {order_id}")
        return "ok"

    @tool(name="refund", effect="write", requires_approval=True)
    def refund_v2(order_id: str, note: str = "") -> str:
        calls.append(f"v2 {order_id}")
        return "ok"

    v1 = Agent(name="ops", version="1", tools=[refund_v1])
    v2 = Agent(name="ops", version="2", tools=[refund_v2])
    model = scripted(reply(None, call("refund", {"order_id": "A1"})), reply("done"))
    engine = make_engine(store, [v1], model)
    run = await engine.submit("ops", "refund A1")
    await run_to_stop(engine, run.id)
    await engine.decide(run.id, Decision(kind="approve"))

    # The new deploy keeps v1 for the runs started on it.
    both = make_engine(store, [v2], model)
    both.versions = {v1.spec_digest(): v1}
    done = await run_to_stop(both, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert calls == ["v1 A1"]
    assert run.spec["version"] == "1"


async def test_a_journal_that_disagrees_with_the_code_is_a_nondeterminism_error(
    store: Store,
) -> None:
    @tool(effect="read")
    def lookup(order_id: str) -> str:
        return "paid"

    agent = Agent(name="ops", tools=[lookup, refund])
    model = scripted(reply(None, call("refund", {"order_id": "A1"})))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("ops", "refund A1")
    await run_to_stop(engine, run.id)  # waits for approval of the refund at step 1
    # The recorded model answer now asks for another call than the journal's next step holds.
    steps = await store.get_steps(run.id)
    tampered = steps[0].model_copy(
        update={
            "output": reply(None, call("lookup", {"order_id": "A1"})).model_dump(
                mode="json", exclude_defaults=True
            )
        }
    )
    current = await store.get_run(run.id)
    await store.commit(
        run.id, expected_version=current.version, changes={}, steps_to_write=[tampered]
    )
    await engine.decide(run.id, Decision(kind="approve"))
    dead = await run_to_stop(engine, run.id)
    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["code"] == "nondeterminism"
    assert dead.error["details"]["step_no"] == 1
