"""A long retry delay hands the run back to the queue (``not_before``) instead of holding a
worker; the submitter's principal reaches tools; an unknown outcome is shown as the typed
``OutcomeUnknown`` error with the failure behind it. Both backends."""

from __future__ import annotations

import time

from _engine_kit import make_engine, run_to_stop, scripted

from bastion.core.records import RunStatus, StepKind, WaitReason
from bastion.core.retry import RetryPolicy
from bastion.engine import Agent, EngineOptions, Worker
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import ToolContext, tool

SLOW_RETRY = RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=60.0, jitter=0.0)


async def test_a_long_retry_delay_releases_the_run_until_then(store: Store) -> None:
    attempts: list[str] = []

    @tool(effect="read", retry=SLOW_RETRY)
    def lookup(ctx: ToolContext, order: str) -> str:
        attempts.append(ctx.idempotency_key)
        if len(attempts) == 1:
            raise ConnectionError("inventory down")
        return "shipped"

    model = scripted(reply(None, call("lookup", {"order": "A"})), reply("done"))
    engine = make_engine(
        store,
        [Agent(name="ops", tools=[lookup])],
        model,
        options=EngineOptions(lease_seconds=5.0, defer_retries_after=5.0),
    )
    run = await engine.submit("ops", "where is A")
    before = time.time()
    parked = await run_to_stop(engine, run.id)

    assert parked.status is RunStatus.PENDING and parked.lease_owner is None
    assert parked.not_before is not None
    assert parked.not_before.timestamp() >= before + 30.0 - 1
    (step,) = [s for s in await store.get_steps(run.id) if s.kind is StepKind.TOOL]
    assert step.attempts == 1 and step.error is not None
    assert await Worker(engine).run_once(run.id) is None  # not before its time

    # Its time comes (moved forward here rather than waited for).
    current = await store.get_run(run.id)
    await store.commit(run.id, expected_version=current.version, changes={"not_before": 0.0})
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert attempts == [f"{run.id}:1", f"{run.id}:1"]


async def test_tools_see_who_submitted_the_run(store: Store) -> None:
    seen: list[tuple[str, str]] = []

    @tool(effect="read")
    def whoami(ctx: ToolContext) -> str:
        seen.append((ctx.principal, ctx.tenant))
        return "ok"

    model = scripted(reply(None, call("whoami", {})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[whoami])], model)
    run = await engine.submit("ops", "who", tenant="acme", principal="svc:billing")
    assert (await store.get_run(run.id)).principal == "svc:billing"
    await run_to_stop(engine, run.id)
    assert seen == [("svc:billing", "acme")]


async def test_an_unknown_outcome_is_shown_as_outcome_unknown_with_its_cause(
    store: Store,
) -> None:
    @tool(effect="write")
    def pay(amount: int) -> str:
        raise TimeoutError("the bank did not answer")

    model = scripted(reply(None, call("pay", {"amount": 5})))
    engine = make_engine(store, [Agent(name="ops", tools=[pay])], model)
    run = await engine.submit("ops", "pay 5")
    waiting = await run_to_stop(engine, run.id)

    assert waiting.wait_reason is WaitReason.OUTCOME_UNKNOWN
    error = waiting.error
    assert error is not None and error["code"] == "outcome_unknown"
    assert error["type"] == "OutcomeUnknown"
    assert "resolve" in error["hint"]
    assert error["details"]["cause"]["details"]["exception"] == "TimeoutError"
    assert error["details"]["tool"] == "pay" and error["details"]["step_no"] == 1
