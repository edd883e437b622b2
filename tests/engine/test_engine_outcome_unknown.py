"""Deciding an *outcome unknown* step: reject (the model is told) and edit (run it with other
arguments). The crash is simulated in-process: the observer raises an exception that no layer
of the engine catches, so nothing after the crash point is written (the subprocess SIGKILL
tests in test_crash_recovery cover approve and resolve)."""

from __future__ import annotations

import time

import pytest
from _engine_kit import make_engine, run_to_stop, scripted

from bastion.core.records import Decision, RunStatus, Step, StepStatus, WaitReason
from bastion.engine import Agent, Worker
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import ToolContext, tool


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing handles it."""


async def _crash_then_expire(store: Store, worker: Worker, run_id: str) -> None:
    with pytest.raises(Crash):
        await worker.run_once(run_id)
    crashed = await store.get_run(run_id)
    assert crashed.status is RunStatus.RUNNING
    # Its lease runs out (rather than waiting for it).
    await store.commit(
        run_id, expected_version=crashed.version, changes={"lease_expires_at": time.time() - 1}
    )


@pytest.mark.parametrize("decision", ["reject", "edit"])
async def test_outcome_unknown_reject_and_edit(store: Store, decision: str) -> None:
    shipped: list[tuple[str, str]] = []

    @tool(effect="write")
    def ship(ctx: ToolContext, item: str) -> str:
        shipped.append((item, ctx.idempotency_key))
        return f"shipped {item}"

    crash_on = {"point": "finishing", "step": 1}

    def observer(point: str, step: Step) -> None:
        if point == crash_on["point"] and step.step_no == crash_on["step"]:
            crash_on["point"] = ""
            raise Crash

    model = scripted(reply(None, call("ship", {"item": "a"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[ship])], model, observer=observer)
    run = await engine.submit("ops", "ship a")
    await _crash_then_expire(store, Worker(engine), run.id)
    assert shipped == [("a", f"{run.id}:1")]

    waiting = await run_to_stop(engine, run.id)
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.OUTCOME_UNKNOWN
    assert waiting.waiting_step == 1
    assert shipped == [("a", f"{run.id}:1")]

    if decision == "reject":
        await engine.decide(run.id, Decision(kind="reject", reason="check with the warehouse"))
    else:
        await engine.decide(run.id, Decision(kind="edit", arguments={"item": "a-replacement"}))
    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    step = (await store.get_steps(run.id))[1]
    told = [m.content for m in model.calls[1].messages if m.role == "tool"]
    if decision == "reject":
        assert shipped == [("a", f"{run.id}:1")]
        assert step.status is StepStatus.FAILED
        assert step.error == {"code": "rejected", "message": "check with the warehouse"}
        assert told == ["Error: check with the warehouse"]
    else:
        assert shipped == [("a", f"{run.id}:1"), ("a-replacement", f"{run.id}:1")]
        assert step.status is StepStatus.COMPLETED and step.output == "shipped a-replacement"
        assert told == ["shipped a-replacement"]
    assert step.decision is not None and step.decision.kind == decision
    model.assert_complete()
