"""The journal of one run execution: step numbering, replay lookups, and batched writes.

Owns: assigning step numbers in call order, answering "was this step already done?" from the
recorded journal, checking that the code's next step matches the recorded one (else
``NondeterminismError``), and writing step rows together with the run row in one commit guarded
by the run's version and this worker's lease.

A step's *start* is always written before the caller acts. A *completion* may be held back and
written with the next start (one commit instead of two) when redoing the step after a crash is
harmless: model calls and idempotent tools. Completions of non-idempotent steps are written at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bastion.core.errors import ConcurrentUpdate, NondeterminismError, RunCancelled
from bastion.core.messages import Usage
from bastion.core.records import Decision, Run, RunStatus, Step, StepKind, StepStatus
from bastion.store import Store

if TYPE_CHECKING:
    from bastion.governance.sealing import RunSeal

#: Called at journal points; the crash-recovery tests kill the process from here.
StepObserver = Callable[[str, Step], Awaitable[None] | None]


@dataclass(frozen=True, kw_only=True)
class Fresh:
    """The step was never started before: its start is now journaled; go ahead and act."""

    step: Step


@dataclass(frozen=True, kw_only=True)
class Done:
    """The step finished in an earlier execution: use its recorded result, do not act."""

    step: Step


@dataclass(frozen=True, kw_only=True)
class Interrupted:
    """The step started earlier but its end was never recorded (a crash, or a human wait)."""

    step: Step

    @property
    def decision(self) -> Decision | None:
        return self.step.decision


Slot = Fresh | Done | Interrupted

#: Why an execution stops early: an operator cancelled the run, or this worker shuts down (the
#: run goes back to the queue).
CANCELLED = "cancelled"
SHUTDOWN = "shutdown"

#: Run changes a cancelled run no longer takes: it stays cancelled, only its journal and lease
#: are still written by the worker that was executing it.
_STATUS_FIELDS = ("status", "output", "error", "wait_reason", "waiting_step")


class StopSignal:
    """Set when the execution must stop at its next phase boundary (``reason``: ``CANCELLED``
    or ``SHUTDOWN``). A step that has started acting is never abandoned half-recorded: its
    end is journaled, then the run stops."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def check(self) -> None:
        """Raise ``RunCancelled`` if the execution must stop."""
        if self._event.is_set():
            raise RunCancelled(self.reason)


class Journal:
    def __init__(
        self,
        store: Store,
        run: Run,
        recorded: list[Step],
        *,
        owner: str | None,
        lease_seconds: float,
        observer: StepObserver | None = None,
        stop: StopSignal | None = None,
        seal: RunSeal | None = None,
    ) -> None:
        self._store = store
        self.stop = stop or StopSignal()
        # With guards on, what is written is sealed and what is read back unsealed, here and
        # nowhere else: the rest of the engine sees the run's values as they were.
        self.seal = seal
        if seal is not None:
            recorded = [unseal_step(seal, s) for s in recorded]
        self.run = run
        self.run_id = run.id
        self._recorded = {s.step_no: s for s in recorded}
        # Steps before a run's last spec migration were recorded by an earlier definition of
        # the agent: they replay as recorded (kind and name checked; their inputs were
        # computed by code that may no longer be deployed, so their hashes are not).
        self.trusted_below = max(
            (s.step_no for s in recorded if s.kind is StepKind.NOTE), default=0
        )
        self.owner = owner
        self._lease_seconds = lease_seconds
        self._observer = observer
        self.version = run.version
        self.usage = run.usage
        # Usage as of the step being replayed: limits checked during replay must see what the
        # first execution saw, not the total of steps that come later in the journal.
        ahead = Usage()
        for s in recorded:
            ahead = ahead + s.usage
        self.usage_so_far = Usage(
            input_tokens=run.usage.input_tokens - ahead.input_tokens,
            output_tokens=run.usage.output_tokens - ahead.output_tokens,
            cost_usd=round(run.usage.cost_usd - ahead.cost_usd, 8),
        )
        self.next_no = 0
        self._note_handler: Callable[[Step], None] | None = None
        self._pending: list[Step] = []
        self._lock = asyncio.Lock()

    # ---- lookups --------------------------------------------------------------------------

    @property
    def recorded_steps(self) -> list[Step]:
        return [self._recorded[k] for k in sorted(self._recorded)]

    def upcoming(self) -> Step | None:
        """The recorded step the code's next ``begin`` will meet (None: a fresh step)."""
        self._pass_notes()
        return self._recorded.get(self.next_no)

    def recorded(self, step_no: int) -> Step | None:
        return self._recorded.get(step_no)

    # ---- steps ----------------------------------------------------------------------------

    def on_note(self, handler: Callable[[Step], None]) -> None:
        """Call ``handler`` with each recorded ``note`` step as the journal reaches it, in
        order. Notes are written by operators between steps (a spec migration); the code never
        asks for them, so they take a number without being a step of the code."""
        self._note_handler = handler
        self._pass_notes()

    def _pass_notes(self) -> None:
        while (rec := self._recorded.get(self.next_no)) is not None and rec.kind is StepKind.NOTE:
            if self._note_handler is not None:
                self._note_handler(rec)
            self.next_no += 1

    async def begin(
        self, kind: StepKind, name: str, input: Any, input_hash: str, *, durable: bool = True
    ) -> Slot:
        """Claim the next step number. Replays a recorded step, or journals a fresh start.

        ``durable=False`` lets a start ride with the next write; use it only for steps whose
        action has no effect outside the run (validation notes). Every step begins here, so
        this is where a stopped execution stops (``RunCancelled``).
        """
        self.stop.check()
        self._pass_notes()
        no = self.next_no
        self.next_no += 1
        rec = self._recorded.get(no)
        if rec is not None:
            changed = no >= self.trusted_below and rec.input_hash != input_hash
            if rec.kind != kind or rec.name != name or changed:
                raise NondeterminismError(
                    f"step {no} of run {self.run_id} was recorded as {rec.kind.value} "
                    f"{rec.name!r} (input {rec.input_hash[:12]}), but the code now asks for "
                    f"{kind.value} {name!r} (input {input_hash[:12]})",
                    run_id=self.run_id,
                    step_no=no,
                    recorded={"kind": rec.kind.value, "name": rec.name, "hash": rec.input_hash},
                    current={"kind": kind.value, "name": name, "hash": input_hash},
                )
            self.usage_so_far = self.usage_so_far + rec.usage
            if rec.status.open:
                return Interrupted(step=rec)
            return Done(step=rec)
        step = Step.model_construct(
            run_id=self.run_id,
            step_no=no,
            kind=kind,
            name=name,
            status=StepStatus.STARTED,
            input=input,
            input_hash=input_hash,
            output=None,
            error=None,
            attempts=1,
            usage=Usage(),
            decision=None,
            started_at=datetime.now(UTC),
            finished_at=None,
        )
        await self._notify("before_start", step)
        self._recorded[no] = step
        self._pending.append(step)
        if durable:
            await self.flush()
            await self._notify("started", step)
        return Fresh(step=step)

    async def finish(
        self,
        step: Step,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        usage: Usage | None = None,
        attempts: int | None = None,
        durable: bool,
    ) -> Step:
        """Record a step's end (completed, or failed when ``error`` is given)."""
        await self._notify("finishing", step)
        done = step.model_copy(
            update={
                "status": StepStatus.FAILED if error is not None else StepStatus.COMPLETED,
                "output": output,
                "error": error,
                "usage": usage or step.usage,
                "attempts": attempts if attempts is not None else step.attempts,
                "finished_at": datetime.now(UTC),
                "decision": step.decision,
            }
        )
        if usage is not None:
            self.usage = self.usage + usage
            self.usage_so_far = self.usage_so_far + usage
        self._recorded[step.step_no] = done
        self._pending = [s for s in self._pending if s.step_no != step.step_no]
        self._pending.append(done)
        if durable:
            await self.flush()
        await self._notify("finished", done)
        return done

    def mark_unknown(self, step: Step, *, attempts: int, error: dict[str, Any]) -> Step:
        """Record that ``step``'s effect may or may not have happened. Any earlier decision is
        used up: the person is asked again. Written with the run's wait (the next flush)."""
        unknown = step.model_copy(
            update={
                "status": StepStatus.OUTCOME_UNKNOWN,
                "attempts": attempts,
                "error": error,
                "decision": None,
            }
        )
        self._recorded[step.step_no] = unknown
        self._pending = [s for s in self._pending if s.step_no != step.step_no]
        self._pending.append(unknown)
        return unknown

    async def note_attempt(self, step: Step, attempts: int, error: dict[str, Any]) -> Step:
        """Record a failed attempt of a step that will be retried (durably: the retry count
        must survive a crash so a restarted worker does not retry forever)."""
        noted = step.model_copy(update={"attempts": attempts, "error": error})
        self._recorded[step.step_no] = noted
        self._pending = [s for s in self._pending if s.step_no != step.step_no]
        self._pending.append(noted)
        await self.flush()
        return noted

    # ---- writes ---------------------------------------------------------------------------

    async def flush(self, **changes: Any) -> None:
        """Write pending steps and ``changes`` to the run row in one guarded commit."""
        async with self._lock:
            await self._commit(changes)

    async def _commit(self, changes: dict[str, Any]) -> None:
        values: dict[str, Any] = {"next_step": self.next_no, "usage": self.usage}
        if self.owner is not None and "lease_owner" not in changes:
            values["lease_expires_at"] = time.time() + self._lease_seconds
        values.update(changes)
        batch = list(self._pending)
        if self.seal is not None:
            values, to_write = self._sealed(values, batch)
        else:
            to_write = batch
        try:
            self.version = await self._write(values, to_write)
        except ConcurrentUpdate:
            # Someone else moved the run on. If an operator cancelled it while this worker
            # still holds it, the journal is still ours to finish: write the steps (a call that
            # acted is recorded, never lost) without touching the run's cancelled status.
            current = await self._store.get_run(self.run_id)
            if current.status is not RunStatus.CANCELLED or current.lease_owner != self.owner:
                raise
            self.stop.set(CANCELLED)
            self.version = current.version
            values = {k: v for k, v in values.items() if k not in _STATUS_FIELDS}
            self.version = await self._write(values, to_write)
        if self.seal is not None:
            self.seal.saved()
        # Steps recorded while this commit was in flight (the body runs while the watcher
        # renews the lease) are not in it: keep them for the next write.
        self._pending = [s for s in self._pending if all(s is not b for b in batch)]

    def _sealed(
        self, values: dict[str, Any], batch: list[Step]
    ) -> tuple[dict[str, Any], list[Step]]:
        """``values`` and ``batch`` as they may be stored, and the run's vault if it grew (in
        the same commit: a token is never stored without the vault that restores it)."""
        assert self.seal is not None
        seal = self.seal
        steps = [_seal_step(seal, s) for s in batch]
        out = {k: seal.seal(v) if k in _SEALED_RUN_FIELDS else v for k, v in values.items()}
        if seal.dirty and "vault" not in out:  # ("vault": None: the run's end destroys it)
            out["vault"] = seal.export()
        return out, steps

    async def _write(self, values: dict[str, Any], batch: list[Step]) -> int:
        return await self._store.commit(
            self.run_id,
            expected_version=self.version,
            owner=self.owner,
            changes=values,
            steps_to_write=batch,
            dead_letter_error=values.get("error") if _is_dead_letter(values) else None,
        )

    async def renew_lease(self) -> None:
        async with self._lock:
            await self._commit({})

    async def _notify(self, point: str, step: Step) -> None:
        if self._observer is not None:
            out = self._observer(point, step)
            if out is not None:
                await out


#: Run fields that may hold what a person or a tool wrote.
_SEALED_RUN_FIELDS = frozenset({"input", "output", "error", "overrides"})


def _seal_step(seal: RunSeal, step: Step) -> Step:
    return _map_step(seal.seal, step)


def unseal_step(seal: RunSeal, step: Step) -> Step:
    return _map_step(seal.unseal, step)


def _map_step(f: Callable[[Any], Any], step: Step) -> Step:
    decision = step.decision
    if decision is not None:
        decision = Decision.model_validate(f(decision.model_dump(mode="json")))
    return step.model_copy(
        update={
            "input": f(step.input),
            "output": f(step.output),
            "error": f(step.error),
            "decision": decision,
        }
    )


def _is_dead_letter(changes: dict[str, Any]) -> bool:
    status = changes.get("status")
    return status is not None and getattr(status, "value", status) == "dead_letter"
