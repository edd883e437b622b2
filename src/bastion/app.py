"""``Bastion``: builds every component from one ``Settings`` and gives Python users one object.

Owns: composition (store, model router, tool registry, agents, engine, workers) and the sync
face. The sync face runs coroutines on an event loop that Bastion owns in a background thread,
never on the caller's loop. Does not own any behaviour of the parts it wires.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bastion._sandboxing import build_run_python, build_sandbox
from bastion.config import AgentSettings, Settings
from bastion.core.errors import ConfigError, InvalidState, SealedDataDestroyed
from bastion.core.records import Decision, DecisionKind, Run, RunStatus, Step
from bastion.engine import Agent, Engine, EngineOptions, Limits, StepObserver, Worker
from bastion.governance.sealing import KeyProvider, LocalKeys, Sealing, vault_master_key
from bastion.models import ModelProvider, ModelRouter, ModelsSettings, build_router
from bastion.sandbox import Sandbox
from bastion.store import MIGRATIONS, DeadLetter, Store
from bastion.tools import Tool, ToolRegistry

if TYPE_CHECKING:  # the guards extra is needed only when guards are configured
    from bastion.governance.guards import GuardPipeline

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, for the sync face."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="bastion-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class Bastion:
    """The runtime. Use ``async with Bastion(...) as b`` in async code, or the ``*_sync``
    methods from plain Python (they start Bastion on its own loop thread)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        agents: Sequence[Agent] = (),
        tools: Sequence[Tool] = (),
        providers: Mapping[str, ModelProvider] | None = None,
        env: Mapping[str, str] | None = None,
        observer: StepObserver | None = None,
        guards: GuardPipeline | None = None,
        key_provider: KeyProvider | None = None,
    ) -> None:
        """``key_provider``: wraps each run's data key when guards seal data at rest (a KMS);
        default: the local key in ``guards.vault.key`` (or its key file)."""
        self.settings = settings or Settings()
        self._env = dict(env) if env is not None else {}
        self._extra_providers = dict(providers or {})
        self._observer = observer
        if guards is None and self.settings.guards is not None:
            guards = _guard_pipeline(self.settings.guards)
        self.guards = guards
        self._key_provider = key_provider
        self.tools = ToolRegistry(tools)
        for module in self.settings.tool_modules:
            self._register_module(module)
        self.sandbox: Sandbox | None = None
        if self.settings.sandbox is not None:
            self.sandbox = build_sandbox(self.settings.sandbox, self._env)
            if "run_python" not in self.tools:
                self.tools.register(build_run_python(self.sandbox, self.settings.sandbox))
        self.agents = self._build_agents(agents)
        self._store: Store | None = None
        self._router: ModelRouter | None = None
        self._engine: Engine | None = None
        self._loop_thread: _LoopThread | None = None
        self._started_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(
        cls,
        path: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Bastion:
        """Settings from ``bastion.yaml`` (or ``path``) with ``env`` overrides (default:
        this process's environment)."""
        environment = dict(os.environ) if env is None else dict(env)
        return cls(Settings.load(path, env=environment), env=environment, **kwargs)

    # ---- composition --------------------------------------------------------------------

    def _register_module(self, module_name: str) -> None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"tool_modules: cannot import {module_name!r}: {exc}") from None
        for value in vars(module).values():
            if isinstance(value, Tool) and value.name not in self.tools:
                self.tools.register(value)

    def _build_agents(self, python_agents: Sequence[Agent]) -> dict[str, Agent]:
        """The current definition of each agent; an earlier one of the same name (listed
        first) stays deployed in ``agent_versions`` for the runs started on it."""
        agents: dict[str, Agent] = {}
        self.agent_versions: dict[str, Agent] = {}
        for name, declared in self.settings.agents.items():
            agents[name] = self._agent_from_settings(name, declared)
        for agent in python_agents:
            for t in agent.tools:
                if t.name not in self.tools:
                    self.tools.register(t)
            earlier = agents.get(agent.name)
            if earlier is not None:
                self.agent_versions[earlier.spec_digest()] = earlier
            agents[agent.name] = agent
        return agents

    def _agent_from_settings(self, name: str, declared: AgentSettings) -> Agent:
        tools = []
        for tool_name in declared.tools:
            if tool_name not in self.tools:
                raise ConfigError(
                    f"agents.{name}.tools: no tool named {tool_name!r} is registered",
                    hint="Pass it in Bastion(tools=[...]) or list its module in tool_modules.",
                    known=self.tools.names(),
                )
            tools.append(self.tools.get(tool_name))
        limits = Limits(**declared.limits.model_dump())
        return Agent(
            name=name,
            instructions=declared.instructions,
            model=declared.model or "default",
            tools=tools,
            mode=declared.mode,
            limits=limits,
            review_below_confidence=declared.review_below_confidence,
        )

    def _models_settings(self) -> ModelsSettings:
        models = self.settings.models
        if "default" in models.routes:
            return models
        routes = {**models.routes, "default": [self.settings.default_model]}
        providers = dict(models.providers)
        return models.model_copy(update={"routes": routes, "providers": providers})

    async def start(self) -> Bastion:
        if self._engine is not None:
            return self
        sealing = self._sealing()
        self._store = await Store.open(self.settings.store)
        models = self._models_settings()
        self._router = _router_with_extras(models, self._env, self._extra_providers)
        worker = self.settings.worker
        self._engine = Engine(
            store=self._store,
            complete=self._router.complete,
            agents=self.agents,
            options=EngineOptions(
                lease_seconds=worker.lease_seconds,
                watch_interval=worker.watch_interval,
                cancel_poll_interval=worker.cancel_poll_interval,
                shutdown_grace=worker.shutdown_grace,
                seal_retention_seconds=self._seal_retention(),
            ),
            sealing=sealing,
            observer=self._observer,
            guards=self.guards,
            versions=self.agent_versions,
        )
        self._started_loop = asyncio.get_running_loop()
        return self

    def _sealing(self) -> Sealing | None:
        """With guards on, what they detect is sealed at rest (``governance.sealing``)."""
        if self.guards is None:
            return None
        keys = self._key_provider or LocalKeys(
            vault_master_key(self.guards.config.vault, self.settings.store)
        )
        return Sealing(self.guards.sensitive_spans, keys)

    def _seal_retention(self) -> float:
        days = self.guards.config.vault.retention_days if self.guards is not None else 7.0
        return days * 86400.0

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
        if self.sandbox is not None:
            await self.sandbox.aclose()
        if self._router is not None:
            await self._router.aclose()
        if self._store is not None:
            await self._store.close()
        self._engine = self._router = self._store = None

    async def __aenter__(self) -> Bastion:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise InvalidState(
                "Bastion is not started", hint="Use `async with Bastion(...)` or `await b.start()`."
            )
        return self._engine

    @property
    def store(self) -> Store:
        return self.engine.store

    # ---- the Python API -----------------------------------------------------------------

    async def submit(
        self, agent: str, input: Any, *, tenant: str = "default", principal: str = "system"
    ) -> Run:
        """Queue a run; a worker (``bastion worker`` or ``worker().serve``) executes it.
        ``principal``: who asks (tools see it as ``ctx.principal``)."""
        return await self.engine.submit(agent, input, tenant=tenant, principal=principal)

    async def run(
        self, agent: str, input: Any, *, tenant: str = "default", principal: str = "system"
    ) -> Run:
        """Submit a run and execute it here, to completion or its first stop (a human wait).
        The caller submitted it, so it gets it with its sealed values restored."""
        run = await self.submit(agent, input, tenant=tenant, principal=principal)
        return await self.resume(run.id)

    async def resume(self, run_id: str) -> Run:
        """Execute a runnable run (pending, or with an expired lease) here, to its next stop
        (returned with its sealed values restored)."""
        worker = self.worker()
        result = await worker.run_once(run_id)
        if result is None:
            run = await self.engine.get_run(run_id)
            if run.status is RunStatus.PENDING or run.status is RunStatus.RUNNING:
                raise InvalidState(
                    f"run {run_id} is {run.status.value} and leased by {run.lease_owner!r}",
                    hint="Another worker is executing it; wait for it or for its lease to expire.",
                )
            result = run
        return await self._shown(result)

    async def _shown(self, run: Run) -> Run:
        if self.engine.sealing is None or (run.ended_at is not None and not run.output):
            return run
        try:
            shown, _ = await self.engine.reveal(run)
        except SealedDataDestroyed:
            return run  # its retention ended with it (retention_days: 0)
        return shown

    async def get_run(self, run_id: str, *, reveal: bool = False) -> Run:
        """A run as stored; ``reveal``: with its sealed values restored (guards on), for
        callers allowed to see them."""
        run = await self.engine.get_run(run_id)
        return (await self.engine.reveal(run))[0] if reveal else run

    async def steps(
        self, run_id: str, *, reveal: bool = False, archived: bool = False
    ) -> list[Step]:
        """The run's journal (``archived``: the steps its replays archived instead)."""
        if archived:
            await self.engine.get_run(run_id)
            steps = await self.store.get_steps(run_id, archived=True)
        else:
            steps = await self.engine.get_steps(run_id)
        if not reveal:
            return steps
        run = await self.engine.get_run(run_id)
        return (await self.engine.reveal(run, steps))[1]

    async def reveal(self, run: Run, steps: list[Step] | None = None) -> tuple[Run, list[Step]]:
        """``run`` and ``steps`` with sealed values restored (see ``Engine.reveal``)."""
        return await self.engine.reveal(run, steps)

    async def upgrade_store(self) -> tuple[list[tuple[int, str]], int, int]:
        """Apply missing schema migrations without starting anything else: (the migrations
        applied as (version, name), the schema version now, the newest this code knows)."""
        store = await Store.open(self.settings.store, migrate=False)
        try:
            applied = await store.upgrade()
            names = {m.version: m.name for m in MIGRATIONS}
            done = [(v, names.get(v, "")) for v in applied]
            return done, await store.schema_version(), store.latest_schema
        finally:
            await store.close()

    async def list_runs(self, **filters: Any) -> list[Run]:
        return await self.store.list_runs(**filters)

    async def review_queue(self, *, tenant: str | None = None) -> list[Run]:
        return await self.store.list_runs(status=RunStatus.WAITING_FOR_HUMAN, tenant=tenant)

    async def dead_letters(
        self, *, tenant: str | None = None, include_resolved: bool = False
    ) -> list[DeadLetter]:
        return await self.store.list_dead_letters(tenant=tenant, include_resolved=include_resolved)

    async def decide(
        self,
        run_id: str,
        kind: DecisionKind,
        *,
        reason: str = "",
        arguments: dict[str, Any] | None = None,
        output: Any = None,
        by: str = "operator",
    ) -> Run:
        decision = Decision(kind=kind, reason=reason, arguments=arguments, output=output, by=by)
        return await self.engine.decide(run_id, decision)

    async def replay(
        self,
        run_id: str,
        *,
        from_step: int | None = None,
        arguments: dict[str, Any] | None = None,
        repeat_effects: bool = False,
    ) -> Run:
        """Send a dead-lettered or failed run back to the queue (see ``Engine.replay``)."""
        return await self.engine.replay(
            run_id, from_step=from_step, arguments=arguments, repeat_effects=repeat_effects
        )

    async def cancel(self, run_id: str, *, reason: str = "cancelled by operator") -> Run:
        return await self.engine.cancel(run_id, reason=reason)

    async def migrate(self, run_id: str, *, by: str = "operator", reason: str = "") -> Run:
        """Move a run to its agent's current definition (see ``Engine.migrate``)."""
        return await self.engine.migrate(run_id, by=by, reason=reason)

    def worker(
        self,
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        health_file: str | None = None,
    ) -> Worker:
        settings = self.settings.worker
        health = health_file or settings.health_file
        return Worker(
            self.engine,
            worker_id=worker_id,
            concurrency=concurrency or settings.concurrency,
            poll_interval=settings.poll_interval,
            health_file=Path(health) if health else None,
            reclaim_local=settings.reclaim_local,
        )

    # ---- the sync face ------------------------------------------------------------------

    def _portal(self) -> _LoopThread:
        if self._loop_thread is None:
            if self._engine is not None:
                raise InvalidState(
                    "this Bastion was started in async code",
                    hint="Use the async methods (await bastion.run(...)) on that loop.",
                )
            self._loop_thread = _LoopThread()
            self._loop_thread.call(self.start())
        return self._loop_thread

    def call_sync(self, awaitable: Awaitable[T]) -> T:
        """Run any of Bastion's coroutines from synchronous code."""

        async def wrap() -> T:
            return await awaitable

        return self._portal().call(wrap())

    def start_sync(self) -> Bastion:
        """Start Bastion on its own loop thread now, so that a bad store or configuration fails
        here rather than in the first call (which would leave that call's coroutine unawaited)."""
        self._portal()
        return self

    def run_sync(
        self, agent: str, input: Any, *, tenant: str = "default", principal: str = "system"
    ) -> Run:
        return self._portal().call(self.run(agent, input, tenant=tenant, principal=principal))

    def close_sync(self) -> None:
        if self._loop_thread is not None:
            self._loop_thread.call(self.close())
            self._loop_thread.stop()
            self._loop_thread = None


def _guard_pipeline(section: Mapping[str, Any]) -> GuardPipeline:
    try:
        from bastion.governance.guards import GuardPipeline
    except ImportError as exc:
        raise ConfigError(
            f"the guards: section needs the guards extra ({exc.name} is not installed)",
            hint="pip install 'bastion[guards]', or remove the guards: section.",
        ) from None
    return GuardPipeline.from_mapping(section)


def _router_with_extras(
    models: ModelsSettings, env: Mapping[str, str], extras: Mapping[str, ModelProvider]
) -> ModelRouter:
    return build_router(models, env=env, extra_providers=extras)
