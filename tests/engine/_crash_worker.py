"""A worker process for the crash-recovery tests: executes one run and can SIGKILL itself.

Run as ``python _crash_worker.py CONFIG_JSON``. The config names the store URL, the run, the
files that record side effects and model calls, and optionally a kill point
(``before_start``, ``started``, ``finishing``, ``finished``) and step number. At that point the
process kills itself with SIGKILL: no ``finally``, no flush, no clean shutdown, as in a real
crash. Without a kill point it carries the run to its next stop and prints the run as JSON.

The agents here are the same in every process, and the model is a pure function of the
conversation so far, so a restarted worker asks for exactly the calls the first one did.

Side effects are appended as lines to ``effects``, one per effect:
``item<TAB>idempotency key<TAB>pid<TAB>start<TAB>end`` (wall-clock seconds around the call):
``pay`` is idempotent and, like a real payment API, drops a repeated idempotency key; ``ship`` is
not idempotent and appends every time it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bastion.core.messages import Message, ModelRequest, ModelResponse, ToolCall, Usage
from bastion.core.records import Step
from bastion.engine import Agent, Engine, EngineOptions, Worker
from bastion.store import Store
from bastion.tools import Tool, ToolContext, tool

#: The tool step the tests kill the worker in: 0 model, 1 tool "a", 2 model, 3 tool "b",
#: 4 model (final answer), 5 final-output validation.
ITEMS = ("a", "b")


def _append(path: Path, line: str) -> None:
    # O_APPEND with one write per line: concurrent writers never interleave a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def build_tools(effects: Path, delay: float = 0.0) -> tuple[Tool, Tool]:
    def record(item: str, key: str) -> None:
        start = time.time()
        time.sleep(delay)
        _append(effects, f"{item}\t{key}\t{os.getpid()}\t{start}\t{time.time()}")

    @tool(effect="external", idempotent=True)
    def pay(ctx: ToolContext, item: str) -> dict[str, str]:
        """Pay for an item (an external API that dedupes by idempotency key)."""
        for row in read_lines(effects):
            if row[1] == ctx.idempotency_key:
                return {"item": row[0], "receipt": row[1]}
        record(item, ctx.idempotency_key)
        return {"item": item, "receipt": ctx.idempotency_key}

    @tool(effect="write")
    def ship(ctx: ToolContext, item: str) -> dict[str, str]:
        """Ship an item (no dedupe: running it twice ships twice)."""
        record(item, ctx.idempotency_key)
        return {"item": item, "receipt": ctx.idempotency_key}

    return pay, ship


def build_agents(effects: Path, delay: float = 0.0) -> dict[str, Agent]:
    pay, ship = build_tools(effects, delay)
    return {
        "payer": Agent(name="payer", instructions="Pay for a, then b.", tools=[pay]),
        "shipper": Agent(name="shipper", instructions="Ship a, then b.", tools=[ship]),
    }


def decide_reply(request: ModelRequest) -> ModelResponse:
    """The model: a pure function of the conversation length (system + user = 2 messages)."""
    n = len(request.messages)
    usage = Usage(input_tokens=10, output_tokens=5)
    name = request.tools[0].name
    if n in (2, 4):
        item = ITEMS[n // 2 - 1]
        call = ToolCall(id=f"call_{item}", name=name, arguments={"item": item})
        message = Message.assistant(None, (call,))
        return ModelResponse(message=message, usage=usage, finish_reason="tool_calls")
    return ModelResponse(message=Message.assistant("done"), usage=usage)


def build_engine(store: Store, config: dict[str, Any]) -> Engine:
    effects = Path(config["effects"])
    model_log = Path(config["model_log"])
    kill_point = config.get("kill_point")
    kill_step = config.get("kill_step")

    async def complete(model: str, request: ModelRequest) -> ModelResponse:
        _append(model_log, f"{len(request.messages)}\t{os.getpid()}")
        return decide_reply(request)

    def observer(point: str, step: Step) -> None:
        if point == kill_point and step.step_no == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    return Engine(
        store=store,
        complete=complete,
        agents=build_agents(effects, float(config.get("tool_delay", 0.0))),
        options=EngineOptions(
            lease_seconds=float(config.get("lease_seconds", 1.0)), watch_interval=0.2
        ),
        observer=observer,
    )


async def main(config: dict[str, Any]) -> int:
    store = await Store.open(config["store_url"])
    try:
        worker = Worker(build_engine(store, config))
        deadline = time.monotonic() + float(config.get("claim_timeout", 20.0))
        # The run is claimable once the dead worker's lease expires.
        while (run := await worker.run_once(config["run_id"])) is None:
            if time.monotonic() > deadline:
                print(json.dumps({"error": "never claimed"}))
                return 3
            await asyncio.sleep(0.05)
        print(run.model_dump_json())
        return 0
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
