"""The engine: submits runs and executes claimed runs to their next stop.

Owns: run status transitions of an execution and what each outcome means for the run row
(completed, waiting for a human, failed, dead letter, released), the lease watcher and the
cancellation poll. Does not own the phases of a step (``_loop``/``_plan``), what people and
operators do to runs (``_operations``), claiming policy (``_worker``) or persistence (``store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bastion.core.errors import (
    AgentNotFound,
    BastionError,
    BudgetExceeded,
    ConcurrentUpdate,
    LeaseLost,
    MaxTurnsExceeded,
    OutputValidationFailed,
    PolicyDenied,
    RunCancelled,
    RunTimeout,
    StoreError,
    UserError,
)
from bastion.core.ids import new_id
from bastion.core.records import (
    Run,
    RunStatus,
    Step,
)
from bastion.engine._agent import Agent
from bastion.engine._journal import CANCELLED, SHUTDOWN, Journal, StepObserver, StopSignal
from bastion.engine._loop import Complete, LoopDeps, RunExecution, Sleep
from bastion.engine._operations import Operations
from bastion.engine._plan import run_plan_mode
from bastion.engine._suspend import Defer, Suspend
from bastion.store import Store

if TYPE_CHECKING:  # guards and sealing need the guards extra: loaded only when configured
    from bastion.governance.guards import GuardPipeline
    from bastion.governance.sealing import Sealing

log = logging.getLogger("bastion.engine")

#: Outcomes that are the agent's own failure: final, replayable only by an operator's choice.
_FAILED = (MaxTurnsExceeded, RunTimeout, BudgetExceeded, PolicyDenied, OutputValidationFailed)


@dataclass(kw_only=True, frozen=True)
class EngineOptions:
    lease_seconds: float = 30.0
    #: How often an executing worker checks that it still holds its lease (and renews it
    #: every third of ``lease_seconds``).
    watch_interval: float = 1.0
    #: How often the engine looks for cancellations of the runs it executes (one query for
    #: all of them); a cancel from this process is seen at once.
    cancel_poll_interval: float = 0.05
    #: On shutdown, how long an execution may take to reach its next phase boundary (a tool
    #: that may change the world is let finish) before it is abandoned.
    shutdown_grace: float = 10.0
    #: A retry delay at least this long (seconds) hands an idempotent tool's run back to the
    #: queue until then instead of holding a worker (``Run.not_before``).
    defer_retries_after: float = 5.0
    #: With sealing on: how long a finished run's sealed values stay recoverable before its
    #: data key is destroyed (0: when it ends).
    seal_retention_seconds: float = 7 * 86400.0


@dataclass(kw_only=True)
class _Active:
    """An execution in progress in this engine."""

    owner: str
    stop: StopSignal
    body: asyncio.Future[None]


@dataclass(kw_only=True)
class Engine(Operations):
    store: Store
    complete: Complete
    agents: Mapping[str, Agent]
    options: EngineOptions = field(default_factory=EngineOptions)
    observer: StepObserver | None = None
    #: Guards at the run's trust boundaries; None runs without them.
    guards: GuardPipeline | None = None
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    #: Earlier versions of agents still deployed, by ``spec_digest``: a run started against
    #: one of them executes on it (a version pin) instead of on the current definition.
    versions: Mapping[str, Agent] = field(default_factory=dict)
    #: With guards on: what the guards detect is sealed before it is stored.
    sealing: Sealing | None = None
    _active: dict[str, _Active] = field(default_factory=dict, init=False, repr=False)
    _poller: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    # ---- submitting and reading ---------------------------------------------------------

    async def submit(
        self,
        agent: str,
        input: Any,
        *,
        tenant: str = "default",
        principal: str = "system",
        run_id: str | None = None,
    ) -> Run:
        definition = self.agent(agent)
        if input is None or input == "":
            raise UserError("a run needs an input", hint="Pass the task as text or a JSON object.")
        now = datetime.now(UTC)
        run_id = run_id or new_id("run")
        sealed: tuple[str, str] | None = None
        if self.sealing is not None:
            seal, wrapped_key = self.sealing.new_run(tenant, run_id)
            input = seal.seal(input)
            sealed = (wrapped_key, seal.export())
        run = Run(
            id=run_id,
            tenant=tenant,
            principal=principal,
            agent=definition.name,
            input=input,
            spec=definition.spec(),
            spec_digest=definition.spec_digest(),
            created_at=now,
            updated_at=now,
        )
        return await self.store.create_run(run, sealed_vault=sealed)

    async def get_run(self, run_id: str) -> Run:
        return await self.store.get_run(run_id)

    async def get_steps(self, run_id: str) -> list[Step]:
        await self.store.get_run(run_id)
        return await self.store.get_steps(run_id)

    # ---- executing ----------------------------------------------------------------------

    async def execute(self, run: Run, *, owner: str) -> Run:
        """Carry a run claimed by ``owner`` to its next stop and return the run as stored."""
        try:
            agent = self.versions.get(run.spec_digest) or self.agent(run.agent)
        except AgentNotFound as exc:
            # The agent left this deployment: park the run where an operator sees it (and can
            # replay it once the agent is back) rather than failing the worker's claim loop.
            log.error("run %s: %s", run.id, exc)
            error = exc.to_dict()
            with contextlib.suppress(ConcurrentUpdate, LeaseLost):
                await self.store.commit(
                    run.id,
                    expected_version=run.version,
                    owner=owner,
                    changes={
                        "status": RunStatus.DEAD_LETTER,
                        "error": error,
                        "lease_owner": None,
                        "lease_expires_at": None,
                    },
                    dead_letter_error=error,
                )
            return await self.store.get_run(run.id)
        recorded = await self.store.get_steps(run.id)
        seal = await self.open_seal(run) if self.sealing is not None else None
        if seal is not None:
            run = run.model_copy(
                update={"input": seal.unseal(run.input), "overrides": seal.unseal(run.overrides)}
            )
        stop = StopSignal()
        journal = Journal(
            self.store,
            run,
            recorded,
            owner=owner,
            lease_seconds=self.options.lease_seconds,
            observer=self.observer,
            stop=stop,
            seal=seal,
        )
        execution = RunExecution(
            agent,
            run,
            journal,
            LoopDeps(
                complete=self.complete,
                sleep=self.sleep,
                rng=self.rng,
                guards=self.guards,
                defer_after=self.options.defer_retries_after,
            ),
        )
        body = asyncio.ensure_future(self._drive(agent, execution))
        self._active[run.id] = _Active(owner=owner, stop=stop, body=body)
        self._ensure_poller()
        watcher = asyncio.ensure_future(self._watch(journal, body))
        try:
            await asyncio.shield(body)
        except asyncio.CancelledError:
            if not body.done():
                # Our own caller is shutting down: stop at the next phase boundary (a call that
                # may change the world finishes and is journaled), then hand the run back.
                stop.set(SHUTDOWN)
                done, _ = await asyncio.wait({body}, timeout=self.options.shutdown_grace)
                if not done:
                    log.warning(
                        "run %s: abandoned at shutdown after %ss",
                        run.id,
                        self.options.shutdown_grace,
                    )
                    body.cancel()
                    with contextlib.suppress(BaseException):
                        await body
                    await self._release(journal)
                raise
            # The watcher stopped the run: another worker took it over.
        except (ConcurrentUpdate, LeaseLost) as lost:
            # Writing the run's outcome lost a race: the stored run is the truth; the journal
            # already holds every step that was acted on.
            log.warning("run %s: final write lost a race: %s", run.id, lost)
        finally:
            self._active.pop(run.id, None)
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
            if not self._active:
                await self.aclose()  # nothing to watch: no query left in flight
        return await self.store.get_run(run.id)

    async def _drive(self, agent: Agent, execution: RunExecution) -> None:
        journal = execution.journal
        run_id = execution.run.id
        idle = {"lease_owner": None, "lease_expires_at": None}
        try:
            if agent.mode == "plan":
                output = await run_plan_mode(execution)
            else:
                output = await execution.react()
            await journal.flush(
                status=RunStatus.COMPLETED,
                ended_at=time.time(),
                **self._end_of_seal(),
                output=output,
                error=None,
                wait_reason=None,
                waiting_step=None,
                **idle,
            )
        except Suspend as wait:
            log.info("run %s waits for a human: %s", run_id, wait)
            await journal.flush(
                status=RunStatus.WAITING_FOR_HUMAN,
                wait_reason=wait.reason,
                waiting_step=wait.step_no,
                error=wait.to_error(),
                **idle,
            )
        except Defer as later:
            log.info("run %s continues after %.1fs: %s", run_id, later.until - time.time(), later)
            await journal.flush(status=RunStatus.PENDING, not_before=later.until, **idle)
        except RunCancelled as stopped:
            if stopped.reason == SHUTDOWN:
                log.info("run %s: handed back at shutdown", run_id)
                await self._release(journal)
            else:
                log.info("run %s: stopped, it was cancelled", run_id)
                # The run is cancelled already; write what the journal still holds.
                await journal.flush(**idle)
        except (ConcurrentUpdate, LeaseLost) as lost:
            log.warning("run %s: stopped, another writer took over: %s", run_id, lost)
        except StoreError as exc:
            log.error("run %s: store failed, its lease will expire and it resumes: %s", run_id, exc)
        except _FAILED as exc:
            await journal.flush(
                status=RunStatus.FAILED,
                ended_at=time.time(),
                error=exc.to_dict(),
                **self._end_of_seal(),
                **idle,
            )
        except BastionError as exc:
            await journal.flush(status=RunStatus.DEAD_LETTER, error=exc.to_dict(), **idle)
        except Exception as exc:  # an unexpected bug: keep the run, with the evidence
            log.exception("run %s: unexpected error", run_id)
            error = {
                "code": "internal_error",
                "message": f"{type(exc).__name__}: {exc}",
                "hint": "This is a bug in Bastion or a tool; the traceback is kept with the run.",
                "details": {"traceback": traceback.format_exc(limit=20)},
            }
            await journal.flush(status=RunStatus.DEAD_LETTER, error=error, **idle)

    def _end_of_seal(self) -> dict[str, Any]:
        """Run changes that destroy a run's sealed data when it ends, if it is kept no longer."""
        if self.sealing is None or self.options.seal_retention_seconds > 0:
            return {}
        return {"vault_key": None, "vault": None}

    async def destroy_expired_seals(self) -> int:
        """Destroy the data keys of runs whose retention ended (see ``seal_retention_seconds``);
        returns how many. The worker calls this periodically; `bastion runs purge-seals` too."""
        if self.sealing is None:
            return 0
        ended_before = time.time() - self.options.seal_retention_seconds
        return await self.store.destroy_vault_keys(ended_before=ended_before)

    async def _watch(self, journal: Journal, body: asyncio.Future[None]) -> None:
        """Renew the lease well before it expires; stop the run at once if another worker took
        it over (this one's lease ran out: its writes would be refused anyway)."""
        interval = min(self.options.watch_interval, self.options.lease_seconds / 3)
        renew_every = self.options.lease_seconds / 3
        last_renew = time.monotonic()
        while not body.done():
            await asyncio.sleep(interval)
            try:
                current = await self.store.get_run(journal.run_id)
                if current.lease_owner not in (None, journal.owner):
                    body.cancel()
                    return
                if current.status is RunStatus.CANCELLED:
                    journal.stop.set(CANCELLED)
                elif time.monotonic() - last_renew >= renew_every:
                    await journal.renew_lease()
                    last_renew = time.monotonic()
            except LeaseLost:
                body.cancel()
                return
            except ConcurrentUpdate:
                continue  # a cancel landed; the next look sees it
            except StoreError as exc:
                log.warning("run %s: lease check failed: %s", journal.run_id, exc)
            except Exception:  # never let the lease go unrenewed because of one bad look
                log.exception("run %s: lease watcher error; it goes on", journal.run_id)

    async def aclose(self) -> None:
        """Stop the engine's background work (the cancellation poll); the store stays open."""
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_cancellations())

    async def _poll_cancellations(self) -> None:
        """While this engine executes runs, look every ``cancel_poll_interval`` for those
        cancelled from elsewhere (another process, the CLI) and stop them."""
        while self._active:
            await asyncio.sleep(self.options.cancel_poll_interval)
            ids = list(self._active)
            try:
                cancelled = await self.store.cancelled_among(ids)
            except StoreError as exc:
                log.warning("cancellation check failed: %s", exc)
                continue
            except Exception:  # the poll must outlive one bad answer
                log.exception("cancellation check failed; it goes on")
                continue
            for run_id in cancelled:
                active = self._active.get(run_id)
                if active is not None:
                    active.stop.set(CANCELLED)

    async def _release(self, journal: Journal) -> None:
        with contextlib.suppress(StoreError):
            await journal.flush(status=RunStatus.PENDING, lease_owner=None, lease_expires_at=None)
