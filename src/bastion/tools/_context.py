"""What a tool receives about the call it serves. Owns ToolContext; nothing global."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(kw_only=True, frozen=True)
class ToolContext:
    """Passed as the first argument to tools that declare a ``ctx: ToolContext`` parameter.

    ``idempotency_key`` (``run_id:step_no``) is the same on every retry and on re-execution after
    a crash: pass it to the outside system so it can drop duplicates.
    """

    run_id: str
    step_no: int
    tenant: str = "default"
    principal: str = "system"
    attempt: int = 1
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("bastion.tool"))
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_no}"
