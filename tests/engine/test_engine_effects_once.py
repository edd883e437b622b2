"""Effects at most once: a non-idempotent tool is never called again by Bastion once it may have
acted. A timeout or a failure after the call could have started makes the step
``outcome_unknown`` and the run waits for a person; an idempotent tool is retried with the same
idempotency key; a tool that says its effect never started (``EffectNotStarted``) may be retried.
Both backends; the tools count their real calls."""

from __future__ import annotations

import asyncio

import pytest
from _engine_kit import Sleeps, make_engine, run_to_stop, scripted

from bastion.core.errors import UserError
from bastion.core.records import Decision, RunStatus, StepKind, StepStatus, WaitReason
from bastion.core.retry import RetryPolicy
from bastion.engine import Agent
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import EffectNotStarted, ToolContext, ToolError, tool

THREE = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0.0)


def _tool_step(steps: list) -> object:  # type: ignore[type-arg]
    (step,) = [s for s in steps if s.kind is StepKind.TOOL]
    return step


async def test_write_tool_that_times_out_is_called_once_and_waits_as_outcome_unknown(
    store: Store,
) -> None:
    charged: list[str] = []

    @tool(effect="write", timeout=0.2, retry=THREE)
    async def charge(ctx: ToolContext, amount: int) -> str:
        charged.append(ctx.idempotency_key)
        await asyncio.sleep(0.5)  # the bank accepted it; the answer came too late
        return f"charged {amount}"

    model = scripted(reply(None, call("charge", {"amount": 20})), reply("done"))
    engine = make_engine(store, [Agent(name="pay", tools=[charge])], model, sleep=Sleeps())
    run = await engine.submit("pay", "charge 20")

    waiting = await run_to_stop(engine, run.id)

    assert charged == [f"{run.id}:1"]
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.OUTCOME_UNKNOWN
    assert waiting.waiting_step == 1
    step = _tool_step(await store.get_steps(run.id))
    assert step.status is StepStatus.OUTCOME_UNKNOWN  # type: ignore[attr-defined]
    assert step.error["code"] == "tool_timeout"  # type: ignore[attr-defined]

    # The person checked the bank: it did happen. The run goes on with the given result and
    # the tool is not called again.
    await engine.decide(run.id, Decision(kind="resolve", output="charged 20 (bank ref 991)"))
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert charged == [f"{run.id}:1"]
    told = [m.content for m in model.calls[1].messages if m.role == "tool"]
    assert told == ["charged 20 (bank ref 991)"]


async def test_idempotent_write_tool_is_retried_with_the_same_key(store: Store) -> None:
    keys: list[str] = []

    @tool(effect="write", idempotent=True, timeout=0.2, retry=THREE)
    async def charge(ctx: ToolContext, amount: int) -> str:
        keys.append(ctx.idempotency_key)
        if len(keys) == 1:
            await asyncio.sleep(0.5)
        return f"charged {amount}"

    model = scripted(reply(None, call("charge", {"amount": 20})), reply("done"))
    engine = make_engine(store, [Agent(name="pay", tools=[charge])], model, sleep=Sleeps())
    run = await engine.submit("pay", "charge 20")

    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert keys == [f"{run.id}:1", f"{run.id}:1"]
    step = _tool_step(await store.get_steps(run.id))
    assert step.status is StepStatus.COMPLETED and step.attempts == 2  # type: ignore[attr-defined]


async def test_an_error_after_the_call_could_start_is_an_unknown_outcome_not_a_retry(
    store: Store,
) -> None:
    calls: list[int] = []

    @tool(effect="external", retry=RetryPolicy(max_attempts=5, retry_on=(ConnectionError,)))
    def notify(message: str) -> str:
        calls.append(1)
        raise ConnectionError("connection reset by peer")  # after sending, maybe

    model = scripted(reply(None, call("notify", {"message": "hi"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[notify])], model, sleep=Sleeps())
    run = await engine.submit("ops", "notify")

    waiting = await run_to_stop(engine, run.id)

    assert len(calls) == 1
    assert waiting.wait_reason is WaitReason.OUTCOME_UNKNOWN

    # "Retry" is the person's choice: approve runs it once more, and only once.
    await engine.decide(run.id, Decision(kind="approve", reason="the mail server had no trace"))
    again = await run_to_stop(engine, run.id)
    assert len(calls) == 2
    assert again.status is RunStatus.WAITING_FOR_HUMAN
    assert again.wait_reason is WaitReason.OUTCOME_UNKNOWN
    step = _tool_step(await store.get_steps(run.id))
    assert step.decision is None  # type: ignore[attr-defined]  # used up: asked again

    # "Fail": the model is told, the tool is not called.
    await engine.decide(run.id, Decision(kind="reject", reason="give up"))
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED
    assert len(calls) == 2


async def test_effect_not_started_is_retried_even_for_a_non_idempotent_tool(store: Store) -> None:
    calls: list[str] = []

    @tool(effect="write", retry=THREE)
    def transfer(ctx: ToolContext, amount: int) -> str:
        calls.append(ctx.idempotency_key)
        if len(calls) < 3:
            raise EffectNotStarted("connection refused before the request was sent")
        return "sent"

    model = scripted(reply(None, call("transfer", {"amount": 5})), reply("done"))
    engine = make_engine(store, [Agent(name="pay", tools=[transfer])], model, sleep=Sleeps())
    run = await engine.submit("pay", "send 5")

    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert calls == [f"{run.id}:1"] * 3


async def test_effect_not_started_after_the_last_attempt_dead_letters(store: Store) -> None:
    @tool(effect="write", retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
    def transfer(amount: int) -> str:
        raise EffectNotStarted("connection refused")

    model = scripted(reply(None, call("transfer", {"amount": 5})))
    engine = make_engine(store, [Agent(name="pay", tools=[transfer])], model, sleep=Sleeps())
    run = await engine.submit("pay", "send 5")

    dead = await run_to_stop(engine, run.id)

    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["details"]["may_have_acted"] is False


async def test_a_tool_error_fails_the_step_outright(store: Store) -> None:
    calls: list[int] = []

    @tool(effect="write", retry=THREE)
    def refund(amount: int) -> str:
        calls.append(amount)
        raise ToolError("amount is over the order total")

    model = scripted(reply(None, call("refund", {"amount": 500})), reply("cannot"))
    engine = make_engine(store, [Agent(name="ops", tools=[refund])], model, sleep=Sleeps())
    run = await engine.submit("ops", "refund 500")

    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED
    assert calls == [500]
    step = _tool_step(await store.get_steps(run.id))
    assert step.status is StepStatus.FAILED  # type: ignore[attr-defined]


async def test_replaying_a_dead_letter_over_a_completed_effect_goes_through_a_person(
    store: Store,
) -> None:
    """A run dead-lettered after a write: replaying it from before the write must not make the
    payment again on its own; the step that repeats it waits as outcome_unknown."""
    paid: list[str] = []

    @tool(effect="write")
    def pay(ctx: ToolContext, amount: int) -> str:
        paid.append(ctx.idempotency_key)
        return f"paid {amount}"

    @tool(effect="read")
    def receipt(order: str) -> str:
        raise RuntimeError("receipt service is down")

    model = scripted(
        reply(None, call("pay", {"amount": 7})),
        reply(None, call("receipt", {"order": "A"})),
        # after the replay from step 0: the same plan again
        reply(None, call("pay", {"amount": 7})),
        reply("paid, no receipt"),
    )
    agent = Agent(name="ops", tools=[pay, receipt])
    engine = make_engine(store, [agent], model, sleep=Sleeps())
    run = await engine.submit("ops", "pay 7")
    dead = await run_to_stop(engine, run.id)
    assert dead.status is RunStatus.DEAD_LETTER
    assert paid == [f"{run.id}:1"]

    with pytest.raises(UserError, match="pay"):
        await engine.replay(run.id, from_step=0)
    await engine.replay(run.id, from_step=0, repeat_effects=True)
    waiting = await run_to_stop(engine, run.id)

    assert paid == [f"{run.id}:1"]
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.OUTCOME_UNKNOWN
    assert waiting.waiting_step == 1
    await engine.decide(run.id, Decision(kind="resolve", output="paid 7"))
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert paid == [f"{run.id}:1"]


async def test_replay_from_a_tool_step_that_may_have_acted_waits_for_a_person(
    store: Store,
) -> None:
    """The payment failed after it could have reached the bank, and an operator forced the run
    to dead letters (an older run, or a failure outside the tool): replaying from that step
    asks a person before calling again."""
    calls: list[int] = []

    @tool(effect="write", timeout=5)
    def pay(amount: int) -> str:
        calls.append(amount)
        return "paid"

    model = scripted(reply(None, call("pay", {"amount": 7})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[pay])], model, sleep=Sleeps())
    run = await engine.submit("ops", "pay 7")
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED
    # Force it to dead letters as if step 2 had failed, then replay from the payment.
    current = await store.get_run(run.id)
    await store.commit(
        run.id,
        expected_version=current.version,
        changes={"status": RunStatus.DEAD_LETTER, "error": {"code": "x", "message": "x"}},
    )
    await engine.replay(run.id, from_step=1, arguments={"amount": 8}, repeat_effects=True)
    waiting = await run_to_stop(engine, run.id)
    assert len(calls) == 1
    assert waiting.wait_reason is WaitReason.OUTCOME_UNKNOWN
    # Approving runs it again, with the operator's edited arguments.
    await engine.decide(run.id, Decision(kind="approve"))
    model.add(reply("done again"))
    finished = await run_to_stop(engine, run.id)
    assert calls == [7, 8]
    assert finished.status is RunStatus.COMPLETED, finished.error
