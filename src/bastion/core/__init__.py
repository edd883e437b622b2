"""Plain domain types and errors shared by every layer. No I/O lives here."""

from bastion.core.errors import BastionError
from bastion.core.messages import (
    Message,
    ModelRequest,
    ModelResponse,
    ResponseFormat,
    Role,
    ToolCall,
    ToolSchema,
    Usage,
)
from bastion.core.records import (
    Decision,
    DecisionKind,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepStatus,
    WaitReason,
)

__all__ = [
    "BastionError",
    "Decision",
    "DecisionKind",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "ResponseFormat",
    "Role",
    "Run",
    "RunStatus",
    "Step",
    "StepKind",
    "StepStatus",
    "ToolCall",
    "ToolSchema",
    "Usage",
    "WaitReason",
]
