"""Bastion: a governed runtime for enterprise AI agents. The model plans; Bastion executes.

The public surface is this list; everything else is internal and may change.
"""

from bastion.app import Bastion
from bastion.config import Settings
from bastion.core.errors import (
    BastionError,
    ConcurrentUpdate,
    ConfigError,
    NondeterminismError,
    OutcomeUnknown,
    ProviderError,
    RunError,
    ToolFailed,
    UserError,
)
from bastion.core.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from bastion.core.records import Decision, Run, RunStatus, Step, StepKind, StepStatus, WaitReason
from bastion.core.retry import RetryPolicy
from bastion.engine import Agent, Limits, Worker
from bastion.tools import Condition, ToolContext, ToolError, tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "Bastion",
    "BastionError",
    "ConcurrentUpdate",
    "Condition",
    "ConfigError",
    "Decision",
    "Limits",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "NondeterminismError",
    "OutcomeUnknown",
    "ProviderError",
    "RetryPolicy",
    "Run",
    "RunError",
    "RunStatus",
    "Settings",
    "Step",
    "StepKind",
    "StepStatus",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolFailed",
    "Usage",
    "UserError",
    "WaitReason",
    "Worker",
    "tool",
]
