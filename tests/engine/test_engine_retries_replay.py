"""Tool retries with backoff, dead letters, replay (as recorded and with edited inputs),
and the turn and token limits. Both backends."""

from __future__ import annotations

import time

import pytest
from _engine_kit import Sleeps, function_model, make_engine, run_to_stop, scripted

from bastion.core.errors import InvalidState, ProviderUnavailable, UserError
from bastion.core.messages import ModelRequest, ModelResponse
from bastion.core.records import Decision, RunStatus, StepKind, StepStatus
from bastion.core.retry import RetryPolicy
from bastion.engine import Agent, Limits, Worker
from bastion.store import Store
from bastion.testing import call, reply
from bastion.tools import EffectNotStarted, ToolContext, tool

BACKOFF = RetryPolicy(max_attempts=6, initial_delay=0.1, multiplier=2.0, max_delay=0.3, jitter=0.0)


async def test_retryable_errors_back_off_exponentially_and_attempts_are_journaled(
    store: Store,
) -> None:
    failures_left = [4]
    seen_in_store: list[tuple[int, str | None]] = []

    @tool(effect="read", retry=BACKOFF)
    def lookup(order_id: str) -> str:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            raise ConnectionError("inventory service unreachable")
        return f"{order_id}: shipped"

    class RecordingSleep(Sleeps):
        async def __call__(self, seconds: float) -> None:
            await super().__call__(seconds)
            # While the engine waits to retry, the attempt count is already durable.
            (row,) = [s for s in await store.get_steps(run.id) if s.kind is StepKind.TOOL]
            seen_in_store.append((row.attempts, (row.error or {}).get("code")))

    sleeps = RecordingSleep()
    model = scripted(reply(None, call("lookup", {"order_id": "A1"})), reply("done"))
    engine = make_engine(store, [Agent(name="ops", tools=[lookup])], model, sleep=sleeps)
    run = await engine.submit("ops", "where is A1?")

    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    # 0.1, 0.2, then capped at max_delay.
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert seen_in_store == [(n, "tool_failed") for n in (1, 2, 3, 4)]
    (step,) = [s for s in await store.get_steps(run.id) if s.kind is StepKind.TOOL]
    assert step.status is StepStatus.COMPLETED
    assert step.attempts == 5
    assert step.error is None
    assert step.output == "A1: shipped"
    model.assert_complete()


async def test_last_failed_retry_dead_letters_the_run_with_the_full_error(store: Store) -> None:
    @tool(effect="read", retry=RetryPolicy(max_attempts=3, initial_delay=0.5, jitter=0.0))
    def lookup(order_id: str) -> str:
        raise ConnectionError(f"inventory service unreachable for {order_id}")

    sleeps = Sleeps()
    model = scripted(reply(None, call("lookup", {"order_id": "A1"})))
    engine = make_engine(store, [Agent(name="ops", tools=[lookup])], model, sleep=sleeps)
    run = await engine.submit("ops", "where is A1?")

    dead = await run_to_stop(engine, run.id)

    assert dead.status is RunStatus.DEAD_LETTER
    assert sleeps.delays == pytest.approx([0.5, 1.0])
    error = dead.error
    assert error is not None
    assert error["code"] == "tool_failed"
    assert "inventory service unreachable for A1" in error["message"]
    assert error["details"]["attempts"] == 3
    assert error["details"]["exception"] == "ConnectionError"
    assert error["details"]["step_no"] == 1
    assert error["hint"]
    step = (await store.get_steps(run.id))[1]
    assert step.status is StepStatus.FAILED and step.attempts == 3
    assert step.error == error
    (letter,) = await store.list_dead_letters()
    assert letter.run_id == run.id and letter.step_no == 1
    assert letter.error == error
    model.assert_complete()


async def test_a_non_retryable_error_dead_letters_after_one_attempt(store: Store) -> None:
    @tool(effect="read", retry=BACKOFF)
    def lookup(order_id: str) -> str:
        raise ValueError("corrupt record")

    sleeps = Sleeps()
    model = scripted(reply(None, call("lookup", {"order_id": "A1"})))
    engine = make_engine(store, [Agent(name="ops", tools=[lookup])], model, sleep=sleeps)
    run = await engine.submit("ops", "where is A1?")
    dead = await run_to_stop(engine, run.id)
    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["details"]["exception"] == "ValueError"
    assert sleeps.delays == []


async def test_replay_re_executes_from_the_failed_step_and_archives_the_old_one(
    store: Store,
) -> None:
    outage = [True]
    calls: list[str] = []

    @tool(effect="read", retry=RetryPolicy(max_attempts=2, jitter=0.0))
    def lookup(order_id: str) -> str:
        calls.append(order_id)
        if outage[0]:
            raise ConnectionError("down")
        return "shipped"

    model = scripted(reply(None, call("lookup", {"order_id": "A1"})), reply("it shipped"))
    engine = make_engine(store, [Agent(name="ops", tools=[lookup])], model, sleep=Sleeps())
    run = await engine.submit("ops", "where is A1?")
    assert (await run_to_stop(engine, run.id)).status is RunStatus.DEAD_LETTER
    with pytest.raises(InvalidState):
        await engine.decide(run.id, Decision(kind="approve"))

    outage[0] = False
    replayed = await engine.replay(run.id)
    assert replayed.status is RunStatus.PENDING and replayed.error is None
    assert await store.list_dead_letters() == []
    (letter,) = await store.list_dead_letters(include_resolved=True)
    assert letter.resolution == "replayed"

    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == "it shipped"
    assert calls == ["A1", "A1", "A1"]
    # The model step before the failure came from the journal: asked once for it, once after.
    assert len(model.calls) == 2
    model.assert_complete()
    steps = await store.get_steps(run.id)
    assert [(s.kind, s.status) for s in steps] == [
        (StepKind.MODEL, StepStatus.COMPLETED),
        (StepKind.TOOL, StepStatus.COMPLETED),
        (StepKind.MODEL, StepStatus.COMPLETED),
        (StepKind.VALIDATION, StepStatus.COMPLETED),
    ]
    (archived,) = await store.get_steps(run.id, archived=True)
    assert archived.step_no == 1 and archived.status is StepStatus.FAILED
    assert archived.attempts == 2 and archived.error is not None

    with pytest.raises(InvalidState):
        await engine.replay(run.id)


async def test_replay_from_a_step_with_edited_arguments(store: Store) -> None:
    effects: list[tuple[str, float, str]] = []

    @tool(effect="write")
    def refund(ctx: ToolContext, order_id: str, amount: float) -> str:
        if amount > 100:
            # The card network refused it before any money moved: safe to replay.
            raise EffectNotStarted(f"refund of {amount} exceeds the card limit")
        effects.append((order_id, amount, ctx.idempotency_key))
        return f"refunded {amount}"

    model = scripted(
        reply(None, call("lookup", {"order_id": "A1"})),
        reply(None, call("refund", {"order_id": "A1", "amount": 500})),
        reply("refunded"),
    )

    @tool(effect="read")
    def lookup(order_id: str) -> str:
        return "paid 50"

    engine = make_engine(store, [Agent(name="ops", tools=[lookup, refund])], model)
    run = await engine.submit("ops", "refund A1")
    dead = await run_to_stop(engine, run.id)
    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["details"]["step_no"] == 3

    with pytest.raises(UserError, match="cannot replay from 9"):
        await engine.replay(run.id, from_step=9)
    # Edited arguments go to a tool step and must fit the tool; else the run stays as it is.
    with pytest.raises(UserError, match="not a tool call"):
        await engine.replay(run.id, from_step=2, arguments={"order_id": "A1", "amount": 50})
    with pytest.raises(UserError, match="amount"):
        await engine.replay(run.id, from_step=3, arguments={"order_id": "A1", "amount": "50$"})
    assert (await store.get_run(run.id)).status is RunStatus.DEAD_LETTER
    await engine.replay(run.id, from_step=3, arguments={"order_id": "A1", "amount": 50})
    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert effects == [("A1", 50.0, f"{run.id}:3")]
    steps = await store.get_steps(run.id)
    assert steps[3].input == {"arguments": {"order_id": "A1", "amount": 50.0}}
    assert steps[3].output == "refunded 50.0"
    archived = await store.get_steps(run.id, archived=True)
    assert [(s.step_no, s.status) for s in archived] == [(3, StepStatus.FAILED)]
    assert archived[0].input == {"arguments": {"order_id": "A1", "amount": 500.0}}
    model.assert_complete()


async def test_max_turns_fails_the_run(store: Store) -> None:
    @tool(effect="read")
    def ping() -> str:
        return "pong"

    def always_call(request: ModelRequest) -> ModelResponse:
        return reply(None, call("ping", id=f"c{len(request.messages)}"))

    model = function_model(always_call)
    agent = Agent(name="ops", tools=[ping], limits=Limits(max_turns=3))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("ops", "loop forever")
    failed = await run_to_stop(engine, run.id)
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "max_turns_exceeded"
    assert len(model.calls) == 3
    assert await store.list_dead_letters() == []


async def test_token_budget_counts_across_executions_and_fails_the_run(store: Store) -> None:
    ran: list[str] = []

    @tool(effect="write", requires_approval=True)
    def refund(order_id: str) -> str:
        ran.append(order_id)
        return "ok"

    model = scripted(
        reply(None, call("refund", {"order_id": "A1"}), input_tokens=10, output_tokens=5),
        reply(None, call("refund", {"order_id": "A2"}), input_tokens=10, output_tokens=5),
    )
    agent = Agent(name="ops", tools=[refund], limits=Limits(max_tokens=30))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("ops", "refund A1 and A2")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.usage.total_tokens == 15
    await engine.decide(run.id, Decision(kind="approve"))
    waiting = await run_to_stop(engine, run.id)
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.usage.total_tokens == 30
    await engine.decide(run.id, Decision(kind="approve"))
    failed = await run_to_stop(engine, run.id)

    assert failed.status is RunStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "budget_exceeded"
    assert failed.error["details"]["budget"] == "tokens"
    assert failed.usage.total_tokens == 30
    assert ran == ["A1", "A2"]
    model.assert_complete()


class Crash(BaseException):
    """Stands for the process dying: nothing in the engine handles it."""


async def test_retry_attempts_survive_a_crash_between_attempts(store: Store) -> None:
    tries: list[int] = []

    @tool(effect="read", retry=RetryPolicy(max_attempts=4, initial_delay=0.1, jitter=0.0))
    def lookup(ctx: ToolContext, order_id: str) -> str:
        tries.append(ctx.attempt)
        raise ConnectionError("still down")

    class CrashOnSecondSleep(Sleeps):
        async def __call__(self, seconds: float) -> None:
            await super().__call__(seconds)
            if len(self.delays) == 2:
                raise Crash

    model = scripted(reply(None, call("lookup", {"order_id": "A1"})))
    agent = Agent(name="ops", tools=[lookup])
    crashing = make_engine(store, [agent], model, sleep=CrashOnSecondSleep())
    run = await crashing.submit("ops", "where is A1?")
    with pytest.raises(Crash):
        await Worker(crashing).run_once(run.id)
    assert tries == [1, 2]
    crashed = await store.get_run(run.id)
    await store.commit(
        run.id, expected_version=crashed.version, changes={"lease_expires_at": time.time() - 1}
    )

    sleeps = Sleeps()
    engine = make_engine(store, [agent], model, sleep=sleeps)
    dead = await run_to_stop(engine, run.id)

    # The restarted worker goes on with attempt 3: four attempts in all, not 2 + 4.
    assert tries == [1, 2, 3, 4]
    assert sleeps.delays == pytest.approx([0.4])
    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["details"]["attempts"] == 4


async def test_a_provider_outage_dead_letters_and_replay_asks_the_model_again(
    store: Store,
) -> None:
    @tool(effect="read")
    def lookup(order_id: str) -> str:
        return "shipped"

    outage = ProviderUnavailable("upstream 503 after all retries", provider="openai", status=503)
    model = scripted(reply(None, call("lookup", {"order_id": "A1"})), outage, reply("shipped"))
    engine = make_engine(store, [Agent(name="ops", tools=[lookup])], model)
    run = await engine.submit("ops", "where is A1?")
    dead = await run_to_stop(engine, run.id)

    assert dead.status is RunStatus.DEAD_LETTER
    assert dead.error is not None and dead.error["code"] == "provider_unavailable"
    assert dead.error["details"]["step_no"] == 2
    failed = (await store.get_steps(run.id))[2]
    assert failed.kind is StepKind.MODEL and failed.status is StepStatus.FAILED

    await engine.replay(run.id)
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED and done.output == "shipped"
    assert len(model.calls) == 3
    model.assert_complete()


async def test_a_later_replay_drops_edited_arguments_of_archived_steps(store: Store) -> None:
    done_calls: list[str] = []
    notify_down = [True]

    @tool(effect="write")
    def refund(order_id: str, amount: float) -> str:
        if amount > 100:
            raise EffectNotStarted("over the card limit")
        done_calls.append(f"refund {order_id} {amount}")
        return "refunded"

    @tool(effect="write")
    def notify(order_id: str) -> str:
        if notify_down[0]:
            raise EffectNotStarted("mail server down")
        done_calls.append(f"notify {order_id}")
        return "sent"

    @tool(effect="read")
    def lookup(order_id: str) -> str:
        done_calls.append(f"lookup {order_id}")
        return "already refunded"

    model = scripted(
        reply(None, call("refund", {"order_id": "A1", "amount": 500})),
        reply(None, call("notify", {"order_id": "A1"})),
        # After the replay from step 0 the model takes another path.
        reply(None, call("lookup", {"order_id": "A1"})),
        reply("nothing to do"),
    )
    engine = make_engine(store, [Agent(name="ops", tools=[refund, notify, lookup])], model)
    run = await engine.submit("ops", "refund A1")
    assert (await run_to_stop(engine, run.id)).status is RunStatus.DEAD_LETTER

    await engine.replay(run.id, from_step=1, arguments={"order_id": "A1", "amount": 50})
    second = await run_to_stop(engine, run.id)
    assert second.status is RunStatus.DEAD_LETTER
    assert second.error is not None and second.error["details"]["step_no"] == 3

    notify_down[0] = False
    # The refund at step 1 went through: replaying over it needs the operator's word, and a
    # refund made again at step 1 would wait for a person; here the model looks it up instead.
    with pytest.raises(UserError, match=r"step 1 \(refund\)"):
        await engine.replay(run.id, from_step=0)
    await engine.replay(run.id, from_step=0, repeat_effects=True)
    done = await run_to_stop(engine, run.id)

    # Step 1 is now the lookup; the edited refund arguments were for the archived step 1.
    assert done.status is RunStatus.COMPLETED, done.error
    assert done_calls == ["refund A1 50.0", "lookup A1"]
    assert (await store.get_steps(run.id))[1].input == {"arguments": {"order_id": "A1"}}
    model.assert_complete()
