"""The engine end to end on both stores: a tool call, an approval, a bad argument, completion."""

from __future__ import annotations

from pydantic import BaseModel

from bastion.core.records import Decision, RunStatus, StepKind, WaitReason
from bastion.engine import Agent, Engine, Worker
from bastion.models import ModelRouter
from bastion.store import Store
from bastion.testing import ScriptedModel, call, reply
from bastion.tools import ToolContext, tool


class Refunded(BaseModel):
    order_id: str
    amount: float


async def test_tool_approval_invalid_args_and_completion(store: Store) -> None:
    effects: list[tuple[str, float, str]] = []

    @tool(effect="write", requires_approval=lambda a: a.amount > 100)
    def refund(ctx: ToolContext, order_id: str, amount: float) -> Refunded:
        effects.append((order_id, amount, ctx.idempotency_key))
        return Refunded(order_id=order_id, amount=amount)

    model = ScriptedModel(
        [
            reply(None, call("refund", {"order_id": "A1", "amount": 50})),
            reply(None, call("refund", {"order_id": "A2", "amount": 500})),
            reply(None, call("refund", {"order_id": "A3", "amount": "lots"})),
            reply("done"),
        ]
    )
    agent = Agent(name="ops", model="scripted:x", tools=[refund])
    engine = Engine(
        store=store, complete=ModelRouter({"scripted": model}).complete, agents={"ops": agent}
    )
    worker = Worker(engine)
    run = await engine.submit("ops", "refund the orders")

    waiting = await worker.run_once()
    assert waiting is not None
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.APPROVAL_REQUIRED
    assert [e[0] for e in effects] == ["A1"]

    await engine.decide(run.id, Decision(kind="approve", by="alice"))
    done = await worker.run_once()
    assert done is not None and done.status is RunStatus.COMPLETED
    assert done.output == "done"
    # Each refund happened once, with the idempotency key of its own step.
    assert [(e[0], e[2]) for e in effects] == [("A1", f"{run.id}:1"), ("A2", f"{run.id}:4")]
    model.assert_complete()
    kinds = [s.kind for s in await engine.get_steps(run.id)]
    assert kinds.count(StepKind.APPROVAL) == 1
    assert StepKind.VALIDATION in kinds
    # The bad arguments went back to the model as an error it could read.
    last_request = model.calls[-1]
    assert any("invalid" in (m.content or "") for m in last_request.messages if m.role == "tool")
