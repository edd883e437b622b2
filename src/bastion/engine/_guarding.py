"""The run loop's guard checks: texts crossing a trust boundary go through the guard pipeline.

Owns: calling ``GuardPipeline.scan`` at each boundary of a run (user input, tool arguments,
tool results, the final answer), journaling every verdict that changes something, and holding
the run for a human when a guard asks for review. Does not own detection (``governance.guards``)
or what a boundary's refusal means for the run (the loop decides that from ``Screened``).

Verdicts are journaled as ``validation`` steps named ``guard:<boundary>`` carrying the findings
(never the flagged values). Masking is deterministic, so on replay the same texts rebuild the
same placeholders and the run's vault without storing the values in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bastion.core.canonical import digest
from bastion.core.records import Run, StepKind, WaitReason
from bastion.engine._journal import Done, Interrupted, Journal
from bastion.engine._suspend import Suspend

if TYPE_CHECKING:  # the guards extra is loaded only when guards are configured
    from bastion.governance.guards import Boundary, GuardFinding, GuardPipeline, ScanContext

Verdict = Literal["pass", "blocked"]


@dataclass(frozen=True, kw_only=True)
class Screened:
    """What may cross: ``text`` (masked, replaced by a notice, or as it was), or nothing."""

    verdict: Verdict
    text: str
    summary: str = ""
    #: A reviewer's corrected arguments (a guard review of a tool call's arguments).
    arguments: dict[str, Any] | None = None


class Guarding:
    def __init__(self, pipeline: GuardPipeline, run: Run, journal: Journal) -> None:
        self.pipeline = pipeline
        self.run = run
        self.journal = journal

    def context(self, boundary: Boundary, *, person_text: bool = False) -> ScanContext:
        from bastion.governance.guards import ScanContext

        return ScanContext(
            boundary=boundary,
            tenant_id=self.run.tenant,
            run_id=self.run.id,
            instructions=self.run.spec.get("instructions") or None,
            person_text=person_text,
        )

    async def screen(self, boundary: Boundary, text: str, *, person_text: bool = False) -> Screened:
        """Scan ``text`` at ``boundary``; ``person_text``: a person wrote it (a tool declared
        ``returns_person_text``)."""
        decision = self.pipeline.scan(text, self.context(boundary, person_text=person_text))
        if decision.kind in ("allow", "log"):
            return Screened(verdict="pass", text=text)
        summary = f"{decision.kind} at {boundary}: {_describe(decision.findings)}"
        payload: dict[str, Any] = {
            "boundary": boundary,
            "decision": decision.kind,
            "findings": [f.to_dict() for f in decision.findings],
            "errors": list(decision.errors),
        }
        review = decision.kind == "review"
        slot = await self.journal.begin(
            StepKind.VALIDATION, f"guard:{boundary}", payload, digest(payload), durable=review
        )
        if isinstance(slot, Done):
            return _from_record(slot.step.output or {}, decision.text, summary)
        if review:
            human = slot.decision if isinstance(slot, Interrupted) else None
            if human is None:
                raise Suspend(WaitReason.GUARD_REVIEW, slot.step.step_no, summary)
            record: dict[str, Any] = {"action": human.kind, "by": human.by}
            if human.kind == "edit" and isinstance(human.output, str):
                record["text"] = human.output
            if human.kind == "edit" and human.arguments is not None:
                record["arguments"] = dict(human.arguments)
            await self.journal.finish(slot.step, output=record, durable=True)
            return _from_record(record, decision.text, summary)
        await self.journal.finish(slot.step, output={"action": decision.kind}, durable=False)
        return _from_record({"action": decision.kind}, decision.text, summary)

    def unmask(self, value: Any) -> Any:
        """Restore the run's placeholders in every string inside ``value``."""
        ctx = self.context("tool_args")
        if isinstance(value, str):
            return self.pipeline.unmask(value, ctx)
        if isinstance(value, dict):
            return {k: self.unmask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unmask(v) for v in value]
        return value


def _describe(findings: tuple[GuardFinding, ...] | list[GuardFinding]) -> str:
    """Each finding type with the injection rules that found it, e.g. "PROMPT_INJECTION
    (unvetted_language:de), PERSON" (evidence is safe to show: never the values)."""
    if not findings:
        return "guard failure"
    rules: dict[str, set[str]] = {}
    for f in findings:
        rules.setdefault(f.type, set())
        if f.guard == "injection" and f.evidence:
            rules[f.type].add(f.evidence)
    return ", ".join(
        f"{kind} ({', '.join(sorted(found)[:3])})" if found else kind
        for kind, found in sorted(rules.items())
    )


def _from_record(record: dict[str, Any], guarded: str, summary: str) -> Screened:
    match record.get("action"):
        case "mask" | "quarantine" | "approve":
            # An approving reviewer lets it through; masking still applies to what a masking
            # guard found.
            return Screened(verdict="pass", text=guarded, summary=summary)
        case "edit":
            return Screened(
                verdict="pass",
                text=str(record.get("text", guarded)),
                summary=summary,
                arguments=record.get("arguments"),
            )
        case _:
            return Screened(verdict="blocked", text="", summary=summary)
