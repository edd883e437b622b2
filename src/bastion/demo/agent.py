"""The customer-operations agent and the scripted conversations the demo plays without a model.

Owns: the agent declaration (instructions, tools, limits), the customers' messages, and
``shop_script``: a deterministic stand-in for a model that answers from the conversation so far.
Because it is a function of the request (not a queue), a worker in another process, resuming
from the journal, gets the same answers a single process would have.
"""

from __future__ import annotations

import json
from typing import Any

from bastion.core.messages import ModelRequest, ModelResponse
from bastion.engine import Agent, Limits
from bastion.testing import call, reply
from bastion.tools import Tool

AGENT_NAME = "shop-ops"

INSTRUCTIONS = """\
You are the customer-operations agent of a small coffee-equipment shop.
Use the tools; never invent order data.
- lookup_order gives one order (customer email, total, amount already refunded).
- search_orders lists a customer's orders by email.
- issue_refund refunds an order. Refund at most what is left to refund. Refunds over $100 are
  held for a human's approval automatically: just call the tool.
- After a refund, send_email to the customer confirming the amount and the refund id.
- For reports, export_refunds gives the refunds as CSV; analyse it with run_python (pandas is
  available; pass the CSV in `files` and print the result).
Finish with a short plain-text summary of what you did."""

STATUS_QUESTION = "Hi, this is dana@example.com. Where are my orders?"
REFUND_REQUEST = (
    "Order A-1002 arrived broken (the grinder's hopper is cracked). Please refund the full "
    "amount and confirm to the customer by email."
)
PARTIAL_REFUND_REQUEST = (
    "Order B-2001 came without its filter pack. Please refund $12.50 for it and let the "
    "customer know by email."
)

SUMMARY_REQUEST = "Give me a summary of today's refunds: count, total and the largest."

#: The analysis the scripted model writes for SUMMARY_REQUEST; runs in the sandbox.
SUMMARY_CODE = """\
import pandas as pd
refunds = pd.read_csv("refunds.csv")
largest = refunds.loc[refunds["amount"].idxmax()]
print(f"{len(refunds)} refunds, ${refunds['amount'].sum():.2f} in total; "
      f"largest ${largest['amount']:.2f} on {largest['order_id']} ({largest['reason']})")
"""

#: The script's refunds: order, amount (None: all that is left) and reason, per request.
_REFUNDS: dict[str, tuple[str, float | None, str]] = {
    REFUND_REQUEST: ("A-1002", None, "arrived broken"),
    PARTIAL_REFUND_REQUEST: ("B-2001", 12.50, "filter pack missing"),
}


def build_agent(tools: list[Tool], *, model: str = "default") -> Agent:
    return Agent(
        name=AGENT_NAME,
        instructions=INSTRUCTIONS,
        model=model,
        tools=tools,
        limits=Limits(max_turns=12, max_wall_seconds=300.0),
    )


def _results(request: ModelRequest) -> list[tuple[str, Any]]:
    """The tool results so far, parsed where they are JSON."""
    out: list[tuple[str, Any]] = []
    for m in request.messages:
        if m.role == "tool":
            try:
                value: Any = json.loads(m.content or "")
            except json.JSONDecodeError:
                value = m.content or ""
            out.append((m.name or "", value))
    return out


def shop_script(request: ModelRequest) -> ModelResponse:
    """What a well-behaved model would answer next in each demo conversation."""
    first = next((m.content or "" for m in request.messages if m.role == "user"), "")
    results = _results(request)
    n = len(results) + 1
    last_name, last = results[-1] if results else ("", None)
    if first == SUMMARY_REQUEST:
        return _summary_script(results, n)
    if first == STATUS_QUESTION:
        if not results:
            return reply(None, call("search_orders", {"email": "dana@example.com"}, id=f"c{n}"))
        orders = last if isinstance(last, list) else []
        lines = [f"{o['order_id']}: {o['status']} ({o['items']})" for o in orders]
        return reply("You have these orders: " + "; ".join(lines) + ".")
    order_id, amount, reason = _REFUNDS[first]
    if not results:
        return reply(None, call("lookup_order", {"order_id": order_id}, id=f"c{n}"))
    if last_name == "lookup_order" and isinstance(last, dict):
        left = round(float(last["total"]) - float(last["refunded"]), 2)
        arguments = {"order_id": order_id, "amount": amount or left, "reason": reason}
        return reply(None, call("issue_refund", arguments, id=f"c{n}"))
    if last_name == "issue_refund" and isinstance(last, dict):
        order = next(v for name, v in results if name == "lookup_order")
        body = (
            f"Dear {order['customer']}, we refunded ${last['amount']:.2f} for order "
            f"{order_id} ({reason}; refund {last['refund_id']}). Sorry for the trouble!"
        )
        subject = f"Your refund for order {order_id}"
        arguments = {"to": order["email"], "subject": subject, "body": body}
        return reply(None, call("send_email", arguments, id=f"c{n}"))
    if last_name == "send_email" and isinstance(last, dict):
        refund = next(v for name, v in results if name == "issue_refund")
        return reply(f"Refunded ${refund['amount']:.2f} on {order_id} and emailed {last['to']}.")
    return reply(f"I could not finish: {last}")


def _summary_script(results: list[tuple[str, Any]], n: int) -> ModelResponse:
    if not results:
        return reply(None, call("export_refunds", {}, id=f"c{n}"))
    last_name, last = results[-1]
    if last_name == "export_refunds" and isinstance(last, str):
        arguments = {"code": SUMMARY_CODE, "files": {"refunds.csv": last}}
        return reply(None, call("run_python", arguments, id=f"c{n}"))
    if last_name == "run_python" and isinstance(last, dict) and last.get("ok"):
        return reply(f"Refund summary: {str(last.get('stdout', '')).strip()}")
    return reply(f"I could not compute the summary: {last}")
