"""The guard contract: boundaries, findings, the ``Guard`` protocol and the pipeline's decision.

Owns the plain value types every guard and the pipeline share. Does not own any detection logic,
configuration parsing or masking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from bastion.governance.guards._errors import GuardTripped

#: Where a text crosses a trust boundary; each guard has a mode per boundary.
Boundary = Literal["user_input", "model_output", "tool_args", "tool_result", "retrieved_doc", "log"]
BOUNDARIES: tuple[Boundary, ...] = (
    "user_input",
    "model_output",
    "tool_args",
    "tool_result",
    "retrieved_doc",
    "log",
)

#: What a guard's findings do to the text at one boundary. ``quarantine`` replaces the whole text
#: with a notice that names the findings (for tool results and retrieved documents).
Mode = Literal["off", "log", "mask", "quarantine", "review", "block"]

#: The pipeline's verdict. Ordered by severity: the most severe mode among the guards that found
#: something wins.
GuardAction = Literal["allow", "log", "mask", "quarantine", "review", "block"]
SEVERITY: dict[GuardAction, int] = {
    "allow": 0,
    "log": 1,
    "mask": 2,
    "quarantine": 3,
    "review": 4,
    "block": 5,
}

GuardName = Literal["pii", "injection", "secrets", "pipeline"]


@dataclass(frozen=True, kw_only=True)
class ScanContext:
    """Where a text is being scanned: the boundary plus the ids that key the masking vault."""

    boundary: Boundary = "user_input"
    tenant_id: str | None = None
    run_id: str | None = None
    #: Values that must never cross this boundary (a secret in the system prompt, a canary
    #: token): the secret guard reports them as PROTECTED_VALUE, also when spelled out with
    #: separators ("P-i-a-n-o") or reversed.
    protected: tuple[str, ...] = ()
    #: The agent's instructions (system prompt), if the caller has them: at ``user_input`` the
    #: injection guard then also flags messages that ask to reveal or override them, or that
    #: touch a topic or value they explicitly forbid.
    instructions: str | None = None
    #: The text was written by a person (a customer's ticket returned by a tool), whatever the
    #: boundary: the injection guard reads it as direct input (direct rule weights, no document
    #: classifier). The boundary still decides what a finding does.
    person_text: bool = False


@dataclass(frozen=True, kw_only=True, order=True)
class GuardFinding:
    """One detected item. ``start``/``end`` index the scanned text (end exclusive).

    ``evidence`` is a short, already-safe description (never the raw secret or PII value) so
    findings can be logged and shown to a reviewer without leaking what they flag.
    """

    start: int
    end: int
    type: str
    score: float
    detector: str
    guard: GuardName
    evidence: str = ""

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)

    def overlaps(self, other: GuardFinding) -> bool:
        return self.start < other.end and other.start < self.end

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 4),
            "detector": self.detector,
            "guard": self.guard,
            "evidence": self.evidence,
        }


@runtime_checkable
class Guard(Protocol):
    """A detector: pure function of the text and its context, returning findings."""

    @property
    def name(self) -> GuardName: ...

    def scan(self, text: str, context: ScanContext) -> list[GuardFinding]: ...


@dataclass(frozen=True, kw_only=True)
class GuardDecision:
    """The pipeline's verdict for one text.

    ``text`` is the form to forward or show: a notice for quarantine; otherwise the text with
    whatever a masking guard found masked (so a reviewer or a log sees the masked form too),
    or the original when nothing was masked. ``actions`` maps each guard that found something
    to what it asked for; ``errors`` lists guards that failed (the pipeline failed closed).
    """

    kind: GuardAction
    text: str
    findings: tuple[GuardFinding, ...] = ()
    actions: dict[str, GuardAction] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def allowed(self) -> bool:
        """True when the text (``self.text``) may proceed without a human."""
        return self.kind in ("allow", "log", "mask", "quarantine")

    def raise_for(self) -> None:
        """Raise ``GuardTripped`` if the decision is block or review; the engine's strict mode."""
        if self.kind in ("block", "review"):
            kinds = sorted({f.type for f in self.findings})
            raise GuardTripped(
                f"guard decision {self.kind}: {', '.join(kinds) or 'guard failure'}",
                decision=self.kind,
                findings=[f.to_dict() for f in self.findings],
                errors=list(self.errors) or None,
            )
