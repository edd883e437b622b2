"""Tool contracts: schema derivation, argument validation, timeouts, conditions, outputs."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from bastion.core.errors import (
    PreconditionFailed,
    ToolArgumentsInvalid,
    ToolContractViolation,
    ToolDefinitionError,
    ToolFailed,
    ToolNotFound,
    ToolTimeout,
)
from bastion.core.retry import RetryPolicy
from bastion.tools import Condition, ToolContext, ToolRegistry, invoke_tool, tool
from bastion.tools._invoke import check_preconditions, validate_arguments


class Order(BaseModel):
    id: str
    total: float


def ctx() -> ToolContext:
    return ToolContext(run_id="run_1", step_no=3)


def test_schema_comes_from_type_hints_and_docstring() -> None:
    @tool(effect="write")
    def refund(ctx: ToolContext, order_id: str, amount: float, note: str = "") -> Order:
        """Refund part of an order."""
        return Order(id=order_id, total=amount)

    schema = refund.schema()
    assert schema.description == "Refund part of an order."
    assert schema.parameters["required"] == ["order_id", "amount"]
    assert schema.parameters["properties"]["amount"]["type"] == "number"
    assert "ctx" not in schema.parameters["properties"]
    assert refund.takes_context and not refund.is_async
    assert refund.output_schema["required"] == ["id", "total"]
    # write tools are not assumed idempotent; read tools are
    assert refund.idempotent is False
    assert tool(lambda_free_read).idempotent is True


def lambda_free_read(x: int) -> int:
    return x


@pytest.mark.parametrize(
    ("fn_src", "problem"),
    [
        ("def f(x): return 1", "no type hint"),
        ("def f(x: int): return 1", "return value"),
        ("def f(*a: int) -> int: return 1", "args"),
    ],
)
def test_definition_errors_are_typed(fn_src: str, problem: str) -> None:
    scope: dict[str, object] = {}
    exec(fn_src, scope)
    with pytest.raises(ToolDefinitionError, match=problem):
        tool(scope["f"])  # type: ignore[arg-type]


def test_bad_names_and_effects_are_refused() -> None:
    with pytest.raises(ToolDefinitionError):
        tool(name="bad name!")(lambda_free_read)
    with pytest.raises(ToolDefinitionError):
        tool(effect="delete")(lambda_free_read)  # type: ignore[arg-type]


def test_argument_validation_speaks_to_the_model() -> None:
    @tool
    def lookup(order_id: str, limit: int = 5) -> list[str]:
        return []

    with pytest.raises(ToolArgumentsInvalid) as info:
        validate_arguments(lookup, {"order_id": "A", "limit": "many", "extra": 1})
    text = info.value.message
    assert "limit" in text and "extra" in text
    assert validate_arguments(lookup, {"order_id": "A"}).limit == 5  # type: ignore[attr-defined]


async def test_sync_and_async_tools_run_and_results_are_checked() -> None:
    @tool
    async def total(order_id: str) -> Order:
        return Order(id=order_id, total=9.5)

    @tool
    def broken(order_id: str) -> Order:
        return {"id": order_id}  # type: ignore[return-value]

    args = validate_arguments(total, {"order_id": "A"})
    assert await invoke_tool(total, args, ctx()) == {"id": "A", "total": 9.5}
    with pytest.raises(ToolContractViolation, match="output contract"):
        await invoke_tool(broken, validate_arguments(broken, {"order_id": "A"}), ctx())


async def test_timeout_is_a_retryable_typed_error() -> None:
    @tool(timeout=0.05)
    async def slow() -> int:
        await asyncio.sleep(5)
        return 1

    with pytest.raises(ToolTimeout) as info:
        await invoke_tool(slow, validate_arguments(slow, {}), ctx())
    assert info.value.retryable and info.value.run_id == "run_1"


async def test_retryable_follows_the_retry_policy() -> None:
    @tool(retry=RetryPolicy(max_attempts=3, retry_on=(ConnectionError,)))
    def flaky(kind: str) -> int:
        if kind == "net":
            raise ConnectionError("reset")
        raise ValueError("bad data")

    with pytest.raises(ToolFailed) as net:
        await invoke_tool(flaky, validate_arguments(flaky, {"kind": "net"}), ctx())
    with pytest.raises(ToolFailed) as data:
        await invoke_tool(flaky, validate_arguments(flaky, {"kind": "data"}), ctx())
    assert net.value.retryable is True
    assert data.value.retryable is False
    assert "ValueError" in data.value.message


async def test_pre_and_postconditions() -> None:
    @tool(
        preconditions=[Condition(name="positive", check=lambda a: a.amount > 0)],
        postconditions=[lambda a, r: r.total == a.amount],
    )
    def pay(amount: float, lie: bool = False) -> Order:
        return Order(id="x", total=amount + (1 if lie else 0))

    with pytest.raises(PreconditionFailed, match="positive"):
        check_preconditions(pay, validate_arguments(pay, {"amount": -1}))
    ok = validate_arguments(pay, {"amount": 2})
    check_preconditions(pay, ok)
    assert (await invoke_tool(pay, ok, ctx()))["total"] == 2
    with pytest.raises(ToolContractViolation, match="postcondition"):
        await invoke_tool(pay, validate_arguments(pay, {"amount": 2, "lie": True}), ctx())


def test_approval_rule_as_predicate() -> None:
    @tool(effect="write", requires_approval=lambda a: a.amount > 100)
    def refund(amount: float) -> float:
        return amount

    assert refund.needs_approval(validate_arguments(refund, {"amount": 101}))
    assert not refund.needs_approval(validate_arguments(refund, {"amount": 100}))
    assert refund.contract()["requires_approval"] == "rule"


def test_registry_lookup_and_duplicates() -> None:
    @tool
    def a() -> int:
        return 1

    @tool(name="a")
    def other() -> int:
        return 2

    registry = ToolRegistry([a])
    assert registry.get("a") is a and "a" in registry and len(registry) == 1
    with pytest.raises(ToolNotFound):
        registry.get("missing")
    with pytest.raises(ToolDefinitionError):
        registry.register(other)
    assert [s.name for s in registry.schemas()] == ["a"]


def test_a_tool_defined_in_a_function_sees_the_types_imported_there() -> None:
    """This module uses ``from __future__ import annotations``: the hints are strings naming
    types that exist only in the defining function's scope."""
    from decimal import Decimal

    class Receipt(BaseModel):
        amount: Decimal

    @tool(effect="write")
    def refund(amount: Decimal) -> Receipt:
        """Refund."""
        return Receipt(amount=amount)

    @tool
    def total(amounts: list[Decimal]) -> Decimal:
        """Sum."""
        return sum(amounts, Decimal(0))

    assert "amount" in refund.input_schema["properties"]
    assert refund.output_adapter.validate_python({"amount": "1.5"}) == Receipt(
        amount=Decimal("1.5")
    )
    assert total.input_model.model_validate({"amounts": ["1", "2"]}).amounts == [  # type: ignore[attr-defined]
        Decimal(1),
        Decimal(2),
    ]
