"""Typed tools with contracts, and the registry that holds them.

``@tool`` turns a typed Python function (sync or async) into a ``Tool`` declaration: input and
output JSON schemas from its type hints, its declared effect, idempotency, timeout, retry policy,
pre- and postconditions and approval rule. ``invoke_tool`` runs one call under that contract.
"""

from bastion.tools._context import ToolContext
from bastion.tools._invoke import invoke_tool
from bastion.tools._registry import ToolRegistry
from bastion.tools._tool import Condition, Effect, EffectNotStarted, Tool, ToolError, tool

__all__ = [
    "Condition",
    "Effect",
    "EffectNotStarted",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "invoke_tool",
    "tool",
]
