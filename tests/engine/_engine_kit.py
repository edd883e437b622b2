"""Helpers for the engine tests: an engine over a real store with a scripted or function
model, and a recorder for the engine's sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bastion.core.messages import ModelRequest, ModelResponse
from bastion.core.records import Run
from bastion.engine import Agent, Engine, EngineOptions, StepObserver, Worker
from bastion.models._scripted import ScriptItem
from bastion.store import Store
from bastion.testing import FunctionModel, ScriptedModel

Model = ScriptedModel | FunctionModel


class Sleeps:
    """Stands in for ``asyncio.sleep``: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def scripted(*items: ScriptItem) -> ScriptedModel:
    return ScriptedModel(list(items))


def function_model(fn: Callable[[ModelRequest], ModelResponse]) -> FunctionModel:
    return FunctionModel(fn)


def make_engine(
    store: Store,
    agents: Iterable[Agent] | Mapping[str, Agent],
    model: Model,
    *,
    sleep: Sleeps | None = None,
    observer: StepObserver | None = None,
    options: EngineOptions | None = None,
) -> Engine:
    async def complete(_route: str, request: ModelRequest) -> ModelResponse:
        return await model.complete(request)

    by_name = dict(agents) if isinstance(agents, Mapping) else {a.name: a for a in agents}
    extra: dict[str, Any] = {}
    if sleep is not None:
        extra["sleep"] = sleep
    return Engine(
        store=store,
        complete=complete,
        agents=by_name,
        options=options or EngineOptions(lease_seconds=5.0, watch_interval=0.1),
        observer=observer,
        **extra,
    )


async def run_to_stop(engine: Engine, run_id: str) -> Run:
    """Claim ``run_id`` and execute it to its next stop (one worker pass)."""
    result = await Worker(engine).run_once(run_id)
    assert result is not None, f"run {run_id} was not claimable"
    return result
