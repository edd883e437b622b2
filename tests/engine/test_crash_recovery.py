"""Crash recovery by counting side effects.

A worker process executes a run and SIGKILLs itself at a journal point of the step that
performs the second side effect (step 3). A fresh worker process takes the run over once the
lease expires. Every side effect must then have happened exactly once: the idempotent tool is
re-run with the same idempotency key and its outside system drops the duplicate; the
non-idempotent tool is never re-run blindly, the run waits for a human as *outcome unknown*.
Completed steps are never executed again: the model is not asked again for a model step whose
completion was journaled, and the first effect never repeats.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _crash_worker import build_agents, read_lines

from bastion.core.records import Decision, RunStatus, StepKind, StepStatus, WaitReason
from bastion.engine import Engine
from bastion.store import Store

WORKER = Path(__file__).with_name("_crash_worker.py")
KILL_STEP = 3  # the tool step of item "b"
LEASE = 0.5  # short: nothing else competes for these runs, and the restart waits it out


async def run_worker(config: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"worker exited {proc.returncode}: {err.decode()[-3000:]}")
    text = out.decode().strip()
    return proc.returncode, (json.loads(text.splitlines()[-1]) if text else None)


class Harness:
    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.effects = tmp_path / "effects.log"
        self.model_log = tmp_path / "model.log"
        # The parent only submits and decides; it never executes the run itself.
        self.engine = Engine(store=store, complete=_never_called, agents=build_agents(self.effects))

    def config(self, run_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "store_url": self.store.url,
            "run_id": run_id,
            "effects": str(self.effects),
            "model_log": str(self.model_log),
            "lease_seconds": LEASE,
            **extra,
        }

    def effect_counts(self) -> Counter[str]:
        return Counter(row[0] for row in read_lines(self.effects))

    def model_calls(self) -> Counter[int]:
        """How often the model was asked, keyed by the conversation length it saw."""
        return Counter(int(row[0]) for row in read_lines(self.model_log))


async def _never_called(model: str, request: Any) -> Any:
    raise AssertionError("the test process must not execute runs")


KILL_POINTS = ["before_start", "started", "finishing", "finished"]


@pytest.mark.parametrize("kill_point", KILL_POINTS)
@pytest.mark.parametrize("agent", ["payer", "shipper"], ids=["idempotent", "non_idempotent"])
async def test_kill_and_restart_counts_each_effect_once(
    store: Store, tmp_path: Path, kill_point: str, agent: str
) -> None:
    h = Harness(store, tmp_path)
    run = await h.engine.submit(agent, "buy a and b")
    idempotent = agent == "payer"

    code, _ = await run_worker(h.config(run.id, kill_point=kill_point, kill_step=KILL_STEP))
    assert code == -signal.SIGKILL, "the first worker should have killed itself"
    effect_happened = kill_point in ("finishing", "finished")
    assert h.effect_counts() == Counter({"a": 1, "b": 1 if effect_happened else 0})
    crashed = await store.get_run(run.id)
    assert crashed.status is RunStatus.RUNNING
    assert crashed.lease_owner is not None

    code, after = await run_worker(h.config(run.id))
    assert code == 0 and after is not None

    # A non-idempotent step whose start was journaled but whose end was not must wait for a
    # human; "finished" of a non-idempotent step is journaled at once, so nothing is unknown.
    unknown = not idempotent and kill_point in ("started", "finishing")
    if unknown:
        assert after["status"] == RunStatus.WAITING_FOR_HUMAN.value
        assert after["wait_reason"] == WaitReason.OUTCOME_UNKNOWN.value
        assert after["waiting_step"] == KILL_STEP
        assert h.effect_counts()["b"] == (1 if effect_happened else 0)
        # The operator checks the outside system: the shipment either happened (resolve with
        # its result) or did not (approve: run the step again).
        if effect_happened:
            decision = Decision(kind="resolve", output={"item": "b", "receipt": "manual"})
        else:
            decision = Decision(kind="approve")
        await h.engine.decide(run.id, decision)
        code, after = await run_worker(h.config(run.id))
        assert code == 0 and after is not None

    assert after["status"] == RunStatus.COMPLETED.value, after
    assert after["output"] == "done"
    assert h.effect_counts() == Counter({"a": 1, "b": 1})

    steps = await store.get_steps(run.id)
    assert [s.kind for s in steps] == [
        StepKind.MODEL,
        StepKind.TOOL,
        StepKind.MODEL,
        StepKind.TOOL,
        StepKind.MODEL,
        StepKind.VALIDATION,
    ]
    assert all(s.status is StepStatus.COMPLETED for s in steps)
    if unknown and effect_happened:
        assert steps[KILL_STEP].output == {"item": "b", "receipt": "manual"}
        assert steps[KILL_STEP].decision is not None
    else:
        assert steps[KILL_STEP].output == {"item": "b", "receipt": f"{run.id}:{KILL_STEP}"}

    # Completed model steps are never asked again. The model step before the killed tool step
    # completes durably together with the tool step's start, so only a kill before that start
    # loses it (asking the model again is harmless, and the answer is the same).
    calls = h.model_calls()
    assert calls[2] == 1
    assert calls[4] == (2 if kill_point == "before_start" else 1)
    assert calls[6] == 1


async def test_kill_in_a_model_step_asks_the_model_again_and_continues(
    store: Store, tmp_path: Path
) -> None:
    """A model step has no outside effect: an unfinished one is simply asked again."""
    h = Harness(store, tmp_path)
    run = await h.engine.submit("shipper", "ship a and b")
    code, _ = await run_worker(h.config(run.id, kill_point="finishing", kill_step=2))
    assert code == -signal.SIGKILL
    code, after = await run_worker(h.config(run.id))
    assert code == 0 and after is not None
    assert after["status"] == RunStatus.COMPLETED.value
    assert h.effect_counts() == Counter({"a": 1, "b": 1})
    assert h.model_calls() == Counter({2: 1, 4: 2, 6: 1})
