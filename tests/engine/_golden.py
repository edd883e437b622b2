"""Golden journals: recorded runs replayed by the current engine on every change.

This module declares the recorded agents (their tools and a model that is a pure function of
the conversation) and loads and records the files in ``golden/``. A golden file holds one
completed run: its agent, input, output and every journal step (kind, name, input, input hash,
output, error, attempts, usage, decision).

Re-record only on purpose, when a change *must* break in-flight runs (and then say so in the
release notes): ``python tests/engine/_golden.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bastion.core.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from bastion.core.records import Decision, RunStatus, Step, StepKind, StepStatus
from bastion.engine import Agent, Engine, EngineOptions, Worker
from bastion.store import Store
from bastion.tools import tool

GOLDEN_DIR = Path(__file__).with_name("golden")
FORMAT = 1


class Summary(BaseModel):
    refunded: float
    confidence: float


@dataclass
class Effects:
    """What the golden agents' tools did, in order."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _assistant(text: str | None = None, *calls: ToolCall) -> ModelResponse:
    return ModelResponse(
        message=Message.assistant(text, tuple(calls)),
        usage=Usage(input_tokens=20, output_tokens=8, cost_usd=0.0001),
        finish_reason="tool_calls" if calls else "stop",
        provider="golden",
    )


def react_model(request: ModelRequest) -> ModelResponse:
    n = len(request.messages)
    if n == 2:
        return _assistant(
            None, ToolCall(id="c1", name="lookup_order", arguments={"order_id": "A1"})
        )
    if n == 4:  # bad arguments: refused and fed back
        return _assistant(
            None, ToolCall(id="c2", name="refund", arguments={"order_id": "A1", "amount": "all"})
        )
    if n == 6:  # needs approval (over 20)
        return _assistant(
            "Refunding in full.",
            ToolCall(id="c3", name="refund", arguments={"order_id": "A1", "amount": 50}),
        )
    return _assistant('{"refunded": 50, "confidence": 0.9}')


def plan_model(request: ModelRequest) -> ModelResponse:
    if request.response_format is not None and request.response_format.name == "plan":
        plan = {
            "steps": [
                {"id": "s1", "tool": "find_order", "arguments": {"email": "ann@example.com"}},
                {
                    "id": "s2",
                    "tool": "refund",
                    "arguments": {"order_id": "${s1.order_id}", "amount": "${s1.total}"},
                    "depends_on": ["s1"],
                },
            ],
            "rationale": "find the order, then refund its total",
        }
        return _assistant(json.dumps(plan))
    return _assistant("Refunded order A7 in full.")


def build_agents(effects: Effects) -> dict[str, Agent]:
    @tool(effect="read")
    def lookup_order(order_id: str) -> dict[str, Any]:
        """Look up an order."""
        effects.calls.append(("lookup_order", {"order_id": order_id}))
        # Keys deliberately not sorted: a store that reordered JSON keys would change the
        # conversation that later input hashes cover, and this journal would stop resuming.
        return {"status": "delivered", "order_id": order_id, "paid": 50.0}

    @tool(effect="write", requires_approval=lambda a: a.amount > 20)
    def refund(order_id: str, amount: float) -> str:
        """Refund an amount on an order."""
        effects.calls.append(("refund", {"order_id": order_id, "amount": amount}))
        return f"refunded {amount:.2f} on {order_id}"

    @tool(effect="read")
    def find_order(email: str) -> dict[str, Any]:
        """Find a customer's last order."""
        effects.calls.append(("find_order", {"email": email}))
        return {"order_id": "A7", "total": 40.0}

    return {
        "golden_react": Agent(
            name="golden_react",
            instructions="You handle refunds. Look the order up before refunding.",
            tools=[lookup_order, refund],
            output_type=Summary,
            review_below_confidence=0.5,
        ),
        "golden_plan": Agent(
            name="golden_plan",
            instructions="You handle refunds with a plan.",
            mode="plan",
            tools=[find_order, refund],
        ),
    }


MODELS: dict[str, Callable[[ModelRequest], ModelResponse]] = {
    "golden_react": react_model,
    "golden_plan": plan_model,
}
INPUTS = {
    "golden_react": "Customer A1 wants a full refund.",
    "golden_plan": "Refund ann@example.com's last order.",
}


def golden_engine(store: Store, agent: str, effects: Effects, calls: list[int]) -> Engine:
    async def complete(_route: str, request: ModelRequest) -> ModelResponse:
        calls.append(len(request.messages))
        return MODELS[agent](request)

    return Engine(
        store=store,
        complete=complete,
        agents=build_agents(effects),
        options=EngineOptions(lease_seconds=30.0, watch_interval=0.2),
    )


async def drive(engine: Engine, run_id: str) -> Any:
    """Execute the run to the end, approving whatever waits for approval."""
    worker = Worker(engine)
    for _ in range(10):
        run = await worker.run_once(run_id)
        assert run is not None, f"run {run_id} was not claimable"
        if run.status is not RunStatus.WAITING_FOR_HUMAN:
            return run
        await engine.decide(run_id, Decision(kind="approve", by="golden"))
    raise AssertionError("the run kept waiting")


def step_to_json(step: Step) -> dict[str, Any]:
    return {
        "step_no": step.step_no,
        "kind": step.kind.value,
        "name": step.name,
        "status": step.status.value,
        "input": step.input,
        "input_hash": step.input_hash,
        "output": step.output,
        "error": step.error,
        "attempts": step.attempts,
        "usage": step.usage.model_dump(),
        "decision": step.decision.model_dump(mode="json") if step.decision else None,
    }


def step_from_json(run_id: str, data: dict[str, Any], at: datetime) -> Step:
    return Step(
        run_id=run_id,
        step_no=data["step_no"],
        kind=StepKind(data["kind"]),
        name=data["name"],
        status=StepStatus(data["status"]),
        input=data["input"],
        input_hash=data["input_hash"],
        output=data["output"],
        error=data["error"],
        attempts=data["attempts"],
        usage=Usage.model_validate(data["usage"]),
        decision=Decision.model_validate(data["decision"]) if data["decision"] else None,
        started_at=at,
        finished_at=None if data["status"] == "started" else at,
    )


def load(agent: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN_DIR / f"{agent}.json").read_text())
    assert data["format"] == FORMAT
    return data


async def record(agent: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite:///{tmp}/golden.db")
        try:
            engine = golden_engine(store, agent, Effects(), [])
            run = await engine.submit(agent, INPUTS[agent], run_id=f"run_{agent}")
            done = await drive(engine, run.id)
            assert done.status is RunStatus.COMPLETED, done.error
            steps = await store.get_steps(run.id)
        finally:
            await store.close()
    return {
        "format": FORMAT,
        "agent": agent,
        "input": INPUTS[agent],
        "output": done.output,
        "steps": [step_to_json(s) for s in steps],
    }


async def _main() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    for agent in MODELS:
        data = await record(agent)
        path = GOLDEN_DIR / f"{agent}.json"
        # Key order kept as recorded: the store keeps it too, and hashes of later steps see it.
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {path} ({len(data['steps'])} steps)", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(_main())
