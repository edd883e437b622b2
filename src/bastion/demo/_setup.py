"""Composing the demo's ``Bastion``: the same for the driver and for the worker it kills.

Owns: the demo settings (a SQLite store in the demo directory, a short lease so a dead worker's
run is claimable again within seconds, the model: the script or a real one), and ``Recorder``,
the step observer that logs every model and tool execution into the shop (with its process) and,
in the crashing worker, kills that process with SIGKILL at a chosen point.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bastion.app import Bastion
from bastion.config import Settings, WorkerSettings
from bastion.core.records import Step, StepKind
from bastion.demo.agent import build_agent, shop_script
from bastion.demo.shop import Shop
from bastion.demo.tools import build_tools
from bastion.engine import StepObserver
from bastion.models import ModelProvider
from bastion.sandbox import (
    DEFAULT_PRELOAD,
    Limits,
    NamespaceOptions,
    NamespaceSandbox,
    run_python_tool,
)
from bastion.testing import FunctionModel

#: Seconds a worker's lease lasts; a killed worker's run is claimable once it expires.
LEASE_SECONDS = 2.0
SCRIPTED = "scripted:demo"


def is_scripted(model: str | None) -> bool:
    return model is None or model.startswith("scripted:")


def demo_settings(
    directory: Path, *, model: str | None, config: str | None, env: Mapping[str, str]
) -> Settings:
    """Only the ``models`` section comes from the user's configuration: the demo keeps its own
    store and agent so that a production ``bastion.yaml`` cannot point it at real data."""
    loaded = Settings.load(config, env=env)
    # ``model`` may name a route; ``default_model`` must be a "provider:model".
    route = loaded.models.routes.get(model or "")
    return Settings(
        store=f"sqlite:///{directory / 'bastion.db'}",
        default_model=route[0] if route else model or SCRIPTED,
        models=loaded.models,
        worker=WorkerSettings(
            concurrency=1, lease_seconds=LEASE_SECONDS, poll_interval=0.1, watch_interval=0.5
        ),
    )


@dataclass(kw_only=True)
class Demo:
    bastion: Bastion
    shop: Shop
    script: FunctionModel | None
    #: Where run_python executes; started only by the phase that uses it.
    sandbox: NamespaceSandbox


def build_demo(
    directory: Path,
    *,
    model: str | None,
    config: str | None,
    env: Mapping[str, str],
    observer: StepObserver | None,
) -> Demo:
    shop = Shop(directory / "shop.db")
    settings = demo_settings(directory, model=model, config=config, env=env)
    script = FunctionModel(shop_script, name="scripted") if is_scripted(model) else None
    providers: dict[str, ModelProvider] = {"scripted": script} if script is not None else {}
    # pandas is preloaded in the warm sandbox so the analysis does not pay for its import.
    sandbox = NamespaceSandbox(NamespaceOptions(pool_size=1, preload=(*DEFAULT_PRELOAD, "pandas")))
    analysis = run_python_tool(
        sandbox, limits=Limits(wall_seconds=30, cpu_seconds=30, memory_bytes=1024 * 2**20)
    )
    bastion = Bastion(
        settings,
        # The agent names its model directly (a route name works too), so a ``default`` route in
        # the user's configuration cannot override the model the demo was asked to use.
        agents=[build_agent([*build_tools(shop), analysis], model=model or SCRIPTED)],
        providers=providers,
        env=env,
        observer=observer,
    )
    return Demo(bastion=bastion, shop=shop, script=script, sandbox=sandbox)


#: Where the crashing worker dies: "after" issue_refund finished (its result is journaled),
#: at the start of the next step; or "during" it, once the payment API has accepted the refund
#: but before its result is journaled.
KillPoint = Literal["after", "during"]
KILLED_TOOL = "issue_refund"


class Recorder:
    """Logs each model and tool execution (not the replayed ones: the journal answers those
    without calling the observer) and, given a ``kill`` point, SIGKILLs this process there."""

    def __init__(self, shop: Shop, *, process: str, kill: KillPoint | None = None) -> None:
        self._shop = shop
        #: Who is executing, as logged; the driver renames itself between phases.
        self.process = process
        self._kill = kill
        self._armed = False

    def __call__(self, point: str, step: Step) -> None:
        # A tool step a human resolved or rejected finishes without running the tool.
        answered = step.decision is not None and step.decision.kind in ("resolve", "reject")
        if point == "finishing" and step.kind in (StepKind.MODEL, StepKind.TOOL) and not answered:
            self._shop.log_execution(
                process=self.process,
                run_id=step.run_id,
                step_no=step.step_no,
                kind=step.kind.value,
                name=step.name,
            )
        killed_tool = step.kind is StepKind.TOOL and step.name == KILLED_TOOL
        if self._kill == "during" and point == "finishing" and killed_tool:
            _die(f"{KILLED_TOOL} (step {step.step_no}) returned but is not journaled yet")
        elif self._kill == "after" and point == "finished" and killed_tool:
            self._armed = True
        elif self._armed and point == "started":
            _die(f"step {step.step_no} ({step.kind.value}) is journaled as started")


def _die(where: str) -> None:
    print(f"{where}; pid {os.getpid()} now kills itself with SIGKILL", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
