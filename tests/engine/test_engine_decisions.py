"""Bad model output fed back to the model and then to a human; approval decisions (approve,
reject, edit); the final answer's output contract and the confidence review. Both backends."""

from __future__ import annotations

from typing import Any

import pytest
from _engine_kit import make_engine, run_to_stop, scripted
from pydantic import BaseModel

from bastion.core.errors import UserError
from bastion.core.messages import ModelResponse, ToolCall
from bastion.core.records import Decision, RunStatus, StepKind, WaitReason
from bastion.engine import Agent, Limits
from bastion.store import Store
from bastion.testing import ScriptedModel, call, reply
from bastion.tools import tool


def _refund_tool(effects: list[tuple[str, float]]) -> Any:
    @tool(effect="write", requires_approval=lambda a: a.amount > 100)
    def refund(order_id: str, amount: float) -> str:
        effects.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    return refund


def _bad_json(name: str = "refund") -> ModelResponse:
    bad = ToolCall(
        id="bad",
        name=name,
        arguments={},
        raw_arguments='{"order_id": "A1", amount: }',
        parse_error="Expecting value: line 1 column 26",
    )
    return reply(None, bad)


def _tool_messages(model: ScriptedModel, call_no: int) -> list[str]:
    return [m.content or "" for m in model.calls[call_no].messages if m.role == "tool"]


@pytest.mark.parametrize(
    ("bad", "told"),
    [
        (_bad_json(), "not valid JSON"),
        (reply(None, call("refundd", {"order_id": "A1", "amount": 5})), "there is no tool"),
        (reply(None, call("refund", {"order_id": "A1", "amount": "lots"})), "invalid"),
        (reply(None, call("refund", {"order_id": "A1"})), "amount"),
    ],
    ids=["bad_json", "unknown_tool", "wrong_type", "missing_field"],
)
async def test_invalid_model_output_is_fed_back_to_the_model(
    store: Store, bad: ModelResponse, told: str
) -> None:
    effects: list[tuple[str, float]] = []
    model = scripted(bad, reply(None, call("refund", {"order_id": "A1", "amount": 5})), reply("ok"))
    engine = make_engine(store, [Agent(name="ops", tools=[_refund_tool(effects)])], model)
    run = await engine.submit("ops", "refund A1")
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert effects == [("A1", 5.0)]
    (feedback,) = _tool_messages(model, 1)
    assert feedback.startswith("Error:") and told in feedback
    kinds = [s.kind for s in await store.get_steps(run.id)]
    assert kinds.count(StepKind.VALIDATION) == 2  # the refusal and the final answer
    model.assert_complete()


@pytest.mark.parametrize("decision", ["approve", "edit", "reject"])
async def test_too_many_invalid_outputs_go_to_a_human(store: Store, decision: str) -> None:
    effects: list[tuple[str, float]] = []
    bad = [reply(None, call("refund", {"order_id": "A1", "amount": "x"})) for _ in range(3)]
    model = scripted(*bad)
    agent = Agent(name="ops", tools=[_refund_tool(effects)], limits=Limits(max_invalid_outputs=2))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("ops", "refund A1")

    waiting = await run_to_stop(engine, run.id)
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.INVALID_MODEL_OUTPUT
    assert waiting.error is not None and "invalid" in waiting.error["message"]
    assert len(model.calls) == 3
    assert effects == []

    match decision:
        case "approve":
            model.add(reply("gave up"))
            await engine.decide(run.id, Decision(kind="approve"))
        case "edit":
            model.add(reply("refunded"))
            fixed = {"order_id": "A1", "amount": 7}
            await engine.decide(run.id, Decision(kind="edit", arguments=fixed))
        case _:
            await engine.decide(run.id, Decision(kind="reject", reason="model is confused"))
    after = await run_to_stop(engine, run.id)

    if decision == "reject":
        assert after.status is RunStatus.FAILED
        assert after.error is not None and after.error["code"] == "output_validation_failed"
        assert effects == []
    else:
        assert after.status is RunStatus.COMPLETED, after.error
        assert effects == ([("A1", 7.0)] if decision == "edit" else [])
    model.assert_complete()


@pytest.mark.parametrize("decision", ["approve", "reject", "edit"])
async def test_approval_decisions(store: Store, decision: str) -> None:
    effects: list[tuple[str, float]] = []
    model = scripted(
        reply(None, call("refund", {"order_id": "A1", "amount": 500})), reply("finished")
    )
    engine = make_engine(store, [Agent(name="ops", tools=[_refund_tool(effects)])], model)
    run = await engine.submit("ops", "refund A1")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.wait_reason is WaitReason.APPROVAL_REQUIRED
    assert waiting.waiting_step == 1
    steps = await store.get_steps(run.id)
    assert steps[1].kind is StepKind.APPROVAL
    assert steps[1].input["arguments"] == {"order_id": "A1", "amount": 500.0}

    with pytest.raises(UserError):
        await engine.decide(run.id, Decision(kind="resolve", output="x"))
    with pytest.raises(UserError):
        await engine.decide(run.id, Decision(kind="edit"))
    match decision:
        case "approve":
            await engine.decide(run.id, Decision(kind="approve", by="alice"))
        case "reject":
            await engine.decide(run.id, Decision(kind="reject", reason="too much", by="alice"))
        case _:
            edited = {"order_id": "A1", "amount": 120}
            await engine.decide(run.id, Decision(kind="edit", arguments=edited, by="alice"))
    done = await run_to_stop(engine, run.id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert effects == {"approve": [("A1", 500.0)], "reject": [], "edit": [("A1", 120.0)]}[decision]
    heard = _tool_messages(model, 1)
    if decision == "reject":
        assert heard == ["A human reviewer rejected this call: too much"]
    else:
        assert heard[0].startswith("refunded")
    approval = (await store.get_steps(run.id))[1]
    assert approval.output["kind"] == decision and approval.output["by"] == "alice"
    model.assert_complete()


class Answer(BaseModel):
    answer: str
    confidence: float


async def test_output_contract_violations_are_fed_back_then_accepted(store: Store) -> None:
    def at_least_ten(value: Any) -> str | None:
        return None if len(value["answer"]) >= 10 else "the answer must be at least 10 characters"

    model = scripted(
        reply("the answer is 42"),
        reply('{"answer": "42", "confidence": 0.9}'),
        reply('```json\n{"answer": "forty-two, clearly", "confidence": 0.9}\n```'),
    )
    agent = Agent(name="qa", output_type=Answer, rules=[at_least_ten])
    engine = make_engine(store, [agent], model)
    run = await engine.submit("qa", "what is six times seven?")
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == {"answer": "forty-two, clearly", "confidence": 0.9}
    second = model.calls[1].messages[-1].content or ""
    assert "does not match the required JSON schema" in second
    third = model.calls[2].messages[-1].content or ""
    assert "at least 10 characters" in third
    model.assert_complete()


async def test_an_output_that_never_validates_goes_to_review(store: Store) -> None:
    model = scripted(reply("no"), reply("still no"))
    agent = Agent(name="qa", output_type=Answer, limits=Limits(max_invalid_outputs=1))
    engine = make_engine(store, [agent], model)
    run = await engine.submit("qa", "answer in JSON")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.OUTPUT_REVIEW
    fixed = {"answer": "written by a human", "confidence": 1.0}
    await engine.decide(run.id, Decision(kind="edit", output=fixed))
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED and done.output == fixed
    model.assert_complete()


@pytest.mark.parametrize("decision", ["approve", "edit", "reject"])
async def test_low_confidence_answers_wait_for_review(store: Store, decision: str) -> None:
    model = scripted(reply('{"answer": "probably 41", "confidence": 0.3}'))
    agent = Agent(name="qa", output_type=Answer, review_below_confidence=0.8)
    engine = make_engine(store, [agent], model)
    run = await engine.submit("qa", "what is six times seven?")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.status is RunStatus.WAITING_FOR_HUMAN
    assert waiting.wait_reason is WaitReason.OUTPUT_REVIEW
    assert waiting.output is None

    with pytest.raises(UserError):
        await engine.decide(run.id, Decision(kind="edit"))
    corrected = {"answer": "42", "confidence": 1.0}
    match decision:
        case "approve":
            await engine.decide(run.id, Decision(kind="approve"))
        case "edit":
            await engine.decide(run.id, Decision(kind="edit", output=corrected))
        case _:
            await engine.decide(run.id, Decision(kind="reject", reason="wrong"))
    after = await run_to_stop(engine, run.id)

    if decision == "reject":
        assert after.status is RunStatus.FAILED
        assert after.error is not None and after.error["code"] == "output_validation_failed"
    else:
        assert after.status is RunStatus.COMPLETED
        expected = corrected if decision == "edit" else {"answer": "probably 41", "confidence": 0.3}
        assert after.output == expected
    model.assert_complete()


async def test_a_confident_answer_completes_without_review(store: Store) -> None:
    model = scripted(reply('{"answer": "42", "confidence": 0.95}'))
    agent = Agent(name="qa", output_type=Answer, review_below_confidence=0.8)
    engine = make_engine(store, [agent], model)
    run = await engine.submit("qa", "what is six times seven?")
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED
    assert done.output == {"answer": "42", "confidence": 0.95}


async def test_an_edit_with_invalid_arguments_is_refused_and_the_run_keeps_waiting(
    store: Store,
) -> None:
    effects: list[tuple[str, float]] = []
    model = scripted(
        reply(None, call("refund", {"order_id": "A1", "amount": 500})), reply("finished")
    )
    engine = make_engine(store, [Agent(name="ops", tools=[_refund_tool(effects)])], model)
    run = await engine.submit("ops", "refund A1")
    waiting = await run_to_stop(engine, run.id)
    assert waiting.wait_reason is WaitReason.APPROVAL_REQUIRED

    # A reviewer's typo is the reviewer's to fix: refused at once, the run still waits.
    typo = {"order_id": "A1", "amount": "120 EUR"}
    with pytest.raises(UserError, match="amount"):
        await engine.decide(run.id, Decision(kind="edit", arguments=typo))
    still = await store.get_run(run.id)
    assert still.status is RunStatus.WAITING_FOR_HUMAN and still.version == waiting.version

    await engine.decide(run.id, Decision(kind="edit", arguments={"order_id": "A1", "amount": 120}))
    done = await run_to_stop(engine, run.id)
    assert done.status is RunStatus.COMPLETED, done.error
    assert effects == [("A1", 120.0)]
