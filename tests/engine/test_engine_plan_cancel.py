"""Plan mode (references between steps, replanning after a failed step) and SQLite lock
contention that the store must wait out. (Cancelling a running run: test_engine_cancel.)"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from _engine_kit import function_model, make_engine, run_to_stop, scripted

from bastion.core.errors import InvalidState
from bastion.core.messages import Message, ModelRequest, ModelResponse
from bastion.core.records import Decision, RunStatus, StepKind
from bastion.engine import Agent
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import ToolError, tool


def _plan(*steps: dict[str, object]) -> ModelResponse:
    return ModelResponse(message=Message.assistant(json.dumps({"steps": list(steps)})))


def _texts(request: ModelRequest) -> str:
    return "\n".join(m.content or "" for m in request.messages)


async def test_plan_mode_runs_steps_in_order_and_resolves_references(store: Store) -> None:
    effects: list[tuple[str, object]] = []

    @tool(effect="read")
    def find_order(email: str) -> dict[str, object]:
        effects.append(("find_order", email))
        return {"order_id": "A7", "total": 40.0}

    @tool(effect="write")
    def refund(order_id: str, amount: float, note: str) -> str:
        effects.append(("refund", (order_id, amount, note)))
        return "refunded"

    def model_fn(request: ModelRequest) -> ModelResponse:
        if request.response_format is not None and request.response_format.name == "plan":
            assert request.tools == ()
            return _plan(
                {
                    "id": "s2",
                    "tool": "refund",
                    "arguments": {
                        "order_id": "${s1.order_id}",
                        "amount": "${s1.total}",
                        "note": "order ${s1.order_id}",
                    },
                    "depends_on": ["s1"],
                },
                {"id": "s1", "tool": "find_order", "arguments": {"email": "ann@example.com"}},
            )
        assert "All planned steps are done" in _texts(request)
        return reply("refunded order A7")

    model = function_model(model_fn)
    agent = Agent(name="planner", mode="plan", tools=[find_order, refund])
    engine = make_engine(store, [agent], model)
    run = await engine.submit("planner", "refund ann's last order")
    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == "refunded order A7"
    # s2 is listed first but depends on s1; a whole-string reference keeps its type.
    assert effects == [
        ("find_order", "ann@example.com"),
        ("refund", ("A7", 40.0, "order A7")),
    ]
    assert len(model.calls) == 2
    tools = [s.name for s in await store.get_steps(run.id) if s.kind is StepKind.TOOL]
    assert tools == ["find_order", "refund"]


async def test_plan_mode_replans_after_a_failed_step(store: Store) -> None:
    effects: list[tuple[str, float]] = []

    @tool(effect="write")
    def refund(order_id: str, amount: float) -> str:
        if amount > 100:
            raise ToolError(f"refunds above 100 need a manager; {amount} asked")
        effects.append((order_id, amount))
        return "refunded"

    @tool(effect="write")
    def notify(order_id: str) -> str:
        effects.append((f"notify {order_id}", 0.0))
        return "sent"

    plans: list[str] = []

    def model_fn(request: ModelRequest) -> ModelResponse:
        if request.response_format is None or request.response_format.name != "plan":
            return reply("done")
        plans.append(_texts(request))
        amount = 500 if len(plans) == 1 else 100
        return _plan(
            {"id": "s1", "tool": "refund", "arguments": {"order_id": "A1", "amount": amount}},
            {"id": "s2", "tool": "notify", "arguments": {"order_id": "A1"}, "depends_on": ["s1"]},
        )

    agent = Agent(name="planner", mode="plan", tools=[refund, notify])
    engine = make_engine(store, [agent], function_model(model_fn))
    run = await engine.submit("planner", "refund A1 in full")
    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert len(plans) == 2
    assert "The plan stopped: step s1 (refund) failed" in plans[1]
    assert "need a manager" in plans[1]
    # The failed plan's later step never ran; the new plan ran in full, once.
    assert effects == [("A1", 100.0), ("notify A1", 0.0)]


class SqliteLockHolder:
    """Another process's long write: a second sqlite3 connection holds the write lock."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.seconds = seconds
        self.held = threading.Event()
        self.released = threading.Event()
        self._thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        other = sqlite3.connect(self.path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE runs SET tenant = tenant")
            self.held.set()
            time.sleep(self.seconds)
            other.execute("COMMIT")
            self.released.set()
        finally:
            other.close()

    def start(self) -> None:
        self._thread.start()
        assert self.held.wait(10)

    def join(self) -> None:
        self._thread.join()
        assert self.released.is_set(), "the lock holder never committed"


async def test_a_held_sqlite_write_lock_is_waited_out_not_surfaced(
    sqlite_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "bastion.db"
    holders: list[SqliteLockHolder] = []
    store = await Store.open(sqlite_url)
    try:
        model = scripted(reply(None, call("ping", {})), reply("pong"))

        @tool(effect="read")
        def ping() -> str:
            # While the tool runs, another process takes the write lock: the journal's next
            # commit finds the database locked.
            holder = SqliteLockHolder(db, 0.3)
            holders.append(holder)
            holder.start()
            return "pong"

        engine = make_engine(store, [Agent(name="ops", tools=[ping])], model)
        run = await engine.submit("ops", "ping")

        # The lock is held when the worker claims the run, too.
        first = SqliteLockHolder(db, 0.3)
        holders.append(first)
        await asyncio.to_thread(first.start)
        done = await run_to_stop(engine, run.id)
        for holder in holders:
            await asyncio.to_thread(holder.join)

        assert len(holders) == 2
        assert done.status is RunStatus.COMPLETED, done.error
        assert done.output == "pong"
        model.assert_complete()
    finally:
        await store.close()


async def test_cancel_follows_the_run_transitions(store: Store) -> None:
    @tool(effect="write", requires_approval=True)
    def purge(table: str) -> str:
        return "purged"

    model = scripted(reply(None, call("purge", {"table": "t"})))
    agent = Agent(name="ops", tools=[purge])
    engine = make_engine(store, [agent], model)

    pending = await engine.submit("ops", "purge t")
    assert (await engine.cancel(pending.id)).status is RunStatus.CANCELLED
    with pytest.raises(InvalidState):
        await engine.cancel(pending.id)

    waiting = await engine.submit("ops", "purge t")
    assert (await run_to_stop(engine, waiting.id)).status is RunStatus.WAITING_FOR_HUMAN
    cancelled = await engine.cancel(waiting.id, reason="not today")
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.error == {"code": "cancelled", "message": "not today"}
    with pytest.raises(InvalidState):
        await engine.decide(waiting.id, Decision(kind="approve"))

    # A failed run is final; it goes back to the queue only through replay.
    failing = await engine.submit("ops", "purge t")
    await store.commit(
        failing.id,
        expected_version=failing.version,
        changes={"status": RunStatus.FAILED, "error": {"code": "max_turns_exceeded"}},
    )
    with pytest.raises(InvalidState):
        await engine.cancel(failing.id)
    assert (await store.get_run(failing.id)).status is RunStatus.FAILED
    model.assert_complete()
