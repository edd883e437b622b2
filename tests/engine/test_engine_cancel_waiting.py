"""Cancelling a waiting run closes the wait; every replayed attempt stays archived."""

from __future__ import annotations

from bastion.core.errors import ProviderRequestRejected
from bastion.core.records import RunStatus
from bastion.engine import Agent, Engine, Worker
from bastion.models import ModelRouter
from bastion.store import Store
from bastion.testing import ScriptedModel, call, reply
from bastion.tools import tool


@tool(effect="write", requires_approval=True)
def wire(amount: float) -> str:
    return "sent"


def _engine(store: Store, model: ScriptedModel) -> Engine:
    agent = Agent(name="ops", model="scripted:x", tools=[wire])
    return Engine(
        store=store, complete=ModelRouter({"scripted": model}).complete, agents={"ops": agent}
    )


async def test_cancelling_a_waiting_run_clears_its_wait(store: Store) -> None:
    engine = _engine(store, ScriptedModel([reply(None, call("wire", {"amount": 5}))]))
    run = await engine.submit("ops", "wire money")
    waiting = await Worker(engine).run_once()
    assert waiting is not None and waiting.wait_reason is not None
    cancelled = await engine.cancel(run.id, reason="fraud suspected")
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.wait_reason is None and cancelled.waiting_step is None
    assert await store.list_runs(status=RunStatus.WAITING_FOR_HUMAN) == []


async def test_each_replay_archives_the_failed_attempt(store: Store) -> None:
    boom = ProviderRequestRejected("refused", provider="scripted", status=400)
    model = ScriptedModel([boom, boom, reply("first"), reply("second")])
    engine = _engine(store, model)
    # A non-retryable provider error dead-letters the run; replay it twice.
    run = await engine.submit("ops", "hello")
    worker = Worker(engine)
    assert (await worker.run_once()).status is RunStatus.DEAD_LETTER  # type: ignore[union-attr]
    await engine.replay(run.id)
    assert (await worker.run_once()).status is RunStatus.DEAD_LETTER  # type: ignore[union-attr]
    await engine.replay(run.id)
    done = await worker.run_once()
    assert done is not None and done.status is RunStatus.COMPLETED
    archived = await store.get_steps(run.id, archived=True)
    assert len(archived) == 2
    assert [s.error is not None for s in archived] == [True, True]
    assert archived[0].started_at <= archived[1].started_at
