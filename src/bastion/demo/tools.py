"""The customer-operations agent's tools over the demo shop, with their contracts.

Owns: ``lookup_order`` and ``search_orders`` (reads), ``issue_refund`` (a write: not idempotent
for the engine, approval above a threshold, preconditions and a postcondition; it hands the
step's idempotency key to the shop, which refuses a key it has seen, as a payment API does) and
``send_email`` (an external effect, also keyed) and ``export_refunds`` (a read, CSV for
analysis in the sandbox). Tools are built per shop (no module state).
"""

from __future__ import annotations

from pydantic import BaseModel

from bastion.demo.shop import DuplicateKey, RefundTooLarge, Shop
from bastion.tools import Condition, Tool, ToolContext, ToolError, tool

#: Refunds above this many dollars wait for a human.
APPROVAL_THRESHOLD = 100.00


class Order(BaseModel):
    order_id: str
    customer: str
    email: str
    status: str
    total: float
    refunded: float
    items: str
    placed: str


class OrderSummary(BaseModel):
    order_id: str
    status: str
    total: float
    items: str


class Refund(BaseModel):
    refund_id: str
    order_id: str
    amount: float
    idempotency_key: str


class EmailSent(BaseModel):
    message_id: int
    to: str


def build_tools(shop: Shop, *, approval_threshold: float = APPROVAL_THRESHOLD) -> list[Tool]:
    """The shop's tools, bound to ``shop``."""

    @tool(effect="read")
    def lookup_order(order_id: str) -> Order:
        """Look up one order by its id (like A-1002): customer, status, total, amount refunded."""
        row = shop.order(order_id)
        if row is None:
            raise ToolError(f"there is no order {order_id!r}")
        return Order(order_id=row["id"], **{k: row[k] for k in Order.model_fields if k in row})

    @tool(effect="read")
    def search_orders(email: str) -> list[OrderSummary]:
        """List a customer's orders by their email address."""
        return [
            OrderSummary(order_id=r["id"], status=r["status"], total=r["total"], items=r["items"])
            for r in shop.orders_for(email)
        ]

    def order_exists(args: BaseModel) -> bool:
        return shop.order(getattr(args, "order_id", "")) is not None

    # Preconditions are judged when the call is first made (a resumed run keeps the journal's
    # verdict). "At most the order total" is the contract's check; "at most what is left" is the
    # payment API's own (``RefundTooLarge``), as it would be in a real shop.
    def within_total(args: BaseModel) -> bool:
        order = shop.order(getattr(args, "order_id", ""))
        amount = float(getattr(args, "amount", 0))
        return order is not None and 0 < amount <= order["total"]

    def recorded(_args: BaseModel, result: Refund) -> bool:
        return shop.refund_by_key(result.idempotency_key) is not None

    @tool(
        effect="write",
        idempotent=False,
        requires_approval=lambda args: float(getattr(args, "amount", 0)) > approval_threshold,
        preconditions=[
            Condition(name="order_exists", check=order_exists, message="that order does not exist"),
            Condition(
                name="within_total",
                check=within_total,
                message="a refund must be positive and at most the order total",
            ),
        ],
        postconditions=[Condition(name="refund_recorded", check=recorded)],
    )
    def issue_refund(ctx: ToolContext, order_id: str, amount: float, reason: str) -> Refund:
        """Refund part or all of an order to the customer's card. Refunds over $100 are held
        for a human's approval."""
        try:
            done = shop.record_refund(
                order_id=order_id.strip().upper(),
                amount=round(amount, 2),
                reason=reason,
                idempotency_key=ctx.idempotency_key,
            )
        except (DuplicateKey, RefundTooLarge) as exc:
            raise ToolError(f"the payment API refused the refund: {exc}") from None
        return Refund(idempotency_key=ctx.idempotency_key, **done)

    @tool(effect="external")
    def send_email(ctx: ToolContext, to: str, subject: str, body: str) -> EmailSent:
        """Send an email to a customer."""
        try:
            message_id = shop.send_email(
                to=to, subject=subject, body=body, idempotency_key=ctx.idempotency_key
            )
        except DuplicateKey as exc:
            raise ToolError(f"the mail API refused the message: {exc}") from None
        return EmailSent(message_id=message_id, to=to)

    @tool(effect="read")
    def export_refunds() -> str:
        """All refunds as CSV text (refund_id, order_id, customer, amount, reason), for
        analysis with run_python."""
        lines = ["refund_id,order_id,customer,amount,reason"]
        for r in shop.refunds():
            order = shop.order(r["order_id"]) or {}
            customer = str(order.get("customer", "")).replace(",", " ")
            reason = str(r["reason"]).replace(",", " ")
            lines.append(f"R-{r['id']},{r['order_id']},{customer},{r['amount']:.2f},{reason}")
        return "\n".join(lines) + "\n"

    return [lookup_order, search_orders, issue_refund, send_email, export_refunds]
