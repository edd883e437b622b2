"""Golden journals: runs recorded by an earlier engine resume on the current one.

Each file in ``golden/`` is loaded into a fresh store as an in-flight run (status ``running``,
its worker's lease expired) holding the first ``k`` recorded steps, for every ``k``. A worker
then takes the run over. The current engine must accept every recorded step (no
``NondeterminismError``: same kinds, names and input hashes), never redo one (the model and
the tools are only called for steps past ``k``), and finish with the recorded output and the
recorded journal. A change that would break the resumption of runs in flight fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _golden import Effects, build_agents, drive, golden_engine, load, step_from_json

from bastion.core.messages import Usage
from bastion.core.records import Run, RunStatus
from bastion.store import Store

CASES = [
    (agent, k)
    for agent in ("golden_react", "golden_plan")
    for k in range(len(load(agent)["steps"]) + 1)
]


async def _load_in_flight(store: Store, golden: dict[str, Any], k: int) -> str:
    agent = build_agents(Effects())[golden["agent"]]
    run_id = f"run_{golden['agent']}_{k}"
    now = datetime.now(UTC)
    steps = [step_from_json(run_id, s, now) for s in golden["steps"][:k]]
    usage = Usage()
    for step in steps:
        usage = usage + step.usage
    run = Run(
        id=run_id,
        agent=agent.name,
        input=golden["input"],
        status=RunStatus.RUNNING,
        next_step=k,
        usage=usage,
        spec=agent.spec(),
        spec_digest=agent.spec_digest(),
        attempt=1,
        lease_owner="a-worker-that-died",
        lease_expires_at=now - timedelta(seconds=60),
        created_at=now,
        updated_at=now,
    )
    await store.create_run(run)
    if steps:
        await store.commit(run_id, expected_version=run.version, changes={}, steps_to_write=steps)
    return run_id


@pytest.mark.parametrize(("agent", "k"), CASES, ids=[f"{a}-{k}" for a, k in CASES])
async def test_a_recorded_run_resumes_on_the_current_engine(
    store: Store, agent: str, k: int
) -> None:
    golden = load(agent)
    run_id = await _load_in_flight(store, golden, k)
    effects = Effects()
    model_calls: list[int] = []
    engine = golden_engine(store, agent, effects, model_calls)

    done = await drive(engine, run_id)

    assert done.status is RunStatus.COMPLETED, done.error
    assert done.output == golden["output"]
    recorded = golden["steps"]
    later = recorded[k:]
    # Steps already in the journal were not executed again.
    assert len(model_calls) == sum(1 for s in later if s["kind"] == "model")
    expected_tools = [
        (s["name"], s["input"]["arguments"])
        for s in later
        if s["kind"] == "tool" and s["status"] == "completed"
    ]
    assert effects.calls == expected_tools
    steps = await store.get_steps(run_id)
    assert [(s.kind.value, s.name, s.input_hash, s.output) for s in steps] == [
        (s["kind"], s["name"], s["input_hash"], s["output"]) for s in recorded
    ]
