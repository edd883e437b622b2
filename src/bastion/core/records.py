"""Run and step records, their statuses and kinds, and human decisions.

Owns: the persisted shapes of a run and of one journal step, and the legal run transitions.
Does not own: storing them (``store/``) or deciding transitions (``engine/``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.messages import Usage

JsonObject = dict[str, Any]

#: Version of the persisted run/step shapes. Bump with a line in SCHEMA_CHANGES.
SCHEMA_VERSION = 2
SCHEMA_CHANGES: dict[int, str] = {
    1: "first shape: runs, steps, step_archive",
    2: "runs.confirm_steps and ended_at; step status outcome_unknown; note steps record spec "
    "migrations; with guards on, stored text is sealed (placeholders, vault in runs.vault)",
}


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_HUMAN = "waiting_for_human"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

#: Legal transitions. ``dead_letter`` and ``failed`` go back to ``pending`` only through replay.
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.PENDING,  # lease released (shutdown) or expired
            RunStatus.RUNNING,  # lease taken over by another worker
            RunStatus.WAITING_FOR_HUMAN,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.DEAD_LETTER,
            RunStatus.CANCELLED,
        }
    ),
    RunStatus.WAITING_FOR_HUMAN: frozenset({RunStatus.PENDING, RunStatus.CANCELLED}),
    RunStatus.DEAD_LETTER: frozenset({RunStatus.PENDING, RunStatus.CANCELLED}),
    RunStatus.FAILED: frozenset({RunStatus.PENDING}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


class WaitReason(StrEnum):
    APPROVAL_REQUIRED = "approval_required"
    OUTCOME_UNKNOWN = "outcome_unknown"
    INVALID_MODEL_OUTPUT = "invalid_model_output"
    OUTPUT_REVIEW = "output_review"
    GUARD_REVIEW = "guard_review"


class StepKind(StrEnum):
    MODEL = "model"
    TOOL = "tool"
    APPROVAL = "approval"
    VALIDATION = "validation"
    DELEGATE = "delegate"
    NOTE = "note"


class StepStatus(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    #: A non-idempotent call may or may not have acted (it timed out, failed after it could
    #: have started, or its worker stopped): a person decides, Bastion never re-runs it alone.
    OUTCOME_UNKNOWN = "outcome_unknown"

    @property
    def open(self) -> bool:
        """The step's end was never recorded: it waits to be finished or decided."""
        return self in (StepStatus.STARTED, StepStatus.OUTCOME_UNKNOWN)


DecisionKind = Literal["approve", "reject", "edit", "resolve"]


class Decision(BaseModel):
    """A human's answer to a waiting run.

    approve: go ahead (for ``outcome_unknown``: run the step again).
    reject: do not do it; the model is told why.
    edit: go ahead with ``arguments`` instead of the proposed ones.
    resolve: (``outcome_unknown`` only) the step did happen; ``output`` is its result.
    """

    model_config = ConfigDict(frozen=True)

    kind: DecisionKind
    reason: str = ""
    arguments: JsonObject | None = None
    output: Any = None
    by: str = "operator"


class Run(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str = "default"
    #: Who submitted it (a user or service account; "system" when Bastion was not told).
    principal: str = "system"
    agent: str
    status: RunStatus = RunStatus.PENDING
    input: Any = None
    output: Any = None
    error: JsonObject | None = None
    wait_reason: WaitReason | None = None
    waiting_step: int | None = None
    version: int = 1
    attempt: int = 0
    next_step: int = 0
    usage: Usage = Field(default_factory=Usage)
    spec: JsonObject = Field(default_factory=dict)
    spec_digest: str = ""
    overrides: JsonObject = Field(default_factory=dict)
    #: ``{step_no: tool}``: calls that may have acted in an earlier attempt of this run (before
    #: a replay); making one again waits for a person first.
    confirm_steps: dict[str, str] = Field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    not_before: datetime | None = None
    created_at: datetime
    updated_at: datetime
    #: When the run reached a final status (retention of its sealed data counts from here).
    ended_at: datetime | None = None
    schema_version: int = SCHEMA_VERSION


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    step_no: int
    kind: StepKind
    name: str
    status: StepStatus
    input: Any = None
    input_hash: str = ""
    output: Any = None
    error: JsonObject | None = None
    attempts: int = 1
    usage: Usage = Field(default_factory=Usage)
    decision: Decision | None = None
    started_at: datetime
    finished_at: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_no}"
