"""A worker that never dies quietly: a run that cannot be read or that breaks the engine goes
to dead letters and the others go on; a loop that dies is restarted and shows in the health
report; a worker started on the same host reclaims a killed worker's runs without waiting out
the lease. Both backends."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _crash_worker import build_agents
from _engine_kit import make_engine, scripted
from typer.testing import CliRunner

from bastion.cli import app
from bastion.core.errors import CorruptRecord
from bastion.core.records import Run, RunStatus
from bastion.engine import Agent, Engine, EngineOptions, Worker
from bastion.engine._identity import default_worker_id, local_prefix, owner_is_dead
from bastion.store import Store
from bastion.testing import FunctionModel, reply

HANG = 60
CRASH_WORKER = Path(__file__).with_name("_crash_worker.py")


def _echo_model() -> FunctionModel:
    return FunctionModel(lambda request: reply(f"done: {request.messages[-1].content}"))


async def _serve_until(worker: Worker, store: Store, run_ids: list[str]) -> None:
    stop = asyncio.Event()
    serving = asyncio.ensure_future(worker.serve(stop))
    try:
        for _ in range(HANG * 20):
            runs = [await store.get_run(r) for r in run_ids]
            if all(r.status is RunStatus.COMPLETED for r in runs):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(serving, HANG)


async def _corrupt(store: Store, run_id: str) -> None:
    """Write a run row that cannot be decoded, as a hand edit or a broken build would."""
    async with store._write() as conn:
        await conn.execute(
            sa.text("UPDATE runs SET spec = '{not json' WHERE id = :id"), {"id": run_id}
        )


async def test_a_poison_run_is_dead_lettered_and_twenty_good_ones_finish(store: Store) -> None:
    engine = make_engine(store, [Agent(name="echo")], _echo_model())
    poison = await engine.submit("echo", "poison")
    await _corrupt(store, poison.id)
    good = [(await engine.submit("echo", f"job {i}")).id for i in range(20)]

    worker = Worker(engine, concurrency=4, poll_interval=0.02)
    await _serve_until(worker, store, good)

    for run_id in good:
        assert (await store.get_run(run_id)).status is RunStatus.COMPLETED
    letters = await store.list_dead_letters()
    assert [d.run_id for d in letters] == [poison.id]
    assert letters[0].error["code"] == "corrupt_record"
    async with store._read() as conn:
        status = (
            await conn.execute(sa.text("SELECT status FROM runs WHERE id = :id"), {"id": poison.id})
        ).scalar_one()
    assert status == "dead_letter"
    assert worker.health.dead_lettered == 1
    assert all(loop.restarts == 0 for loop in worker.health.loops.values())
    try:
        await store.get_run(poison.id)
    except CorruptRecord as exc:
        assert exc.run_id == poison.id
    else:
        raise AssertionError("a corrupt row must not decode")


class FlakyStore(Store):
    """A store whose first claim raises an unexpected error (a bug, not a store outage)."""

    failures = 1

    async def claim_run(self, owner: str, **kwargs: Any) -> Run | None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("unexpected bug in the claim path")
        return await super().claim_run(owner, **kwargs)


async def test_a_loop_that_dies_is_restarted_and_reported(store_url: str, tmp_path: Path) -> None:
    store = await Store.open(store_url)
    flaky = FlakyStore(store._engine, store.dialect, store.url, store._writer)
    try:
        engine = make_engine(flaky, [Agent(name="echo")], _echo_model())
        run_ids = [(await engine.submit("echo", f"job {i}")).id for i in range(3)]
        health_file = tmp_path / "health.json"
        worker = Worker(engine, poll_interval=0.02, health_file=health_file, health_interval=0.05)
        await _serve_until(worker, flaky, run_ids)

        loop = worker.health.loops["claim-0"]
        assert loop.restarts == 1
        assert loop.last_error == "RuntimeError: unexpected bug in the claim path"
        for run_id in run_ids:
            assert (await flaky.get_run(run_id)).status is RunStatus.COMPLETED
        report = json.loads(health_file.read_text())
        assert report["loops"]["claim-0"]["restarts"] == 1
        assert report["executed"] == 3
    finally:
        await store.close()


def test_worker_health_command_reads_the_report(tmp_path: Path) -> None:
    runner = CliRunner()
    health = tmp_path / "health.json"
    fresh = {
        "worker_id": "w1",
        "updated_at": __import__("time").time(),
        "executed": 4,
        "loops": {"claim-0": {"alive": True, "restarts": 0, "last_error": None}},
    }
    health.write_text(json.dumps(fresh))
    ok = runner.invoke(app, ["worker", "--health", "--health-file", str(health)])
    assert ok.exit_code == 0, ok.output
    assert "healthy" in ok.output

    dead_loop = {**fresh, "loops": {"claim-0": {"alive": False, "last_error": "boom"}}}
    health.write_text(json.dumps(dead_loop))
    bad = runner.invoke(app, ["worker", "--health", "--health-file", str(health)])
    assert bad.exit_code == 1
    assert "loop claim-0 is not alive (last error: boom)" in bad.output

    stale = {**fresh, "updated_at": 0}
    health.write_text(json.dumps(stale))
    old = runner.invoke(app, ["worker", "--health", "--health-file", str(health)])
    assert old.exit_code == 1 and "old" in old.output

    missing = runner.invoke(app, ["worker", "--health", "--health-file", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "no health file" in missing.output


def test_worker_ids_name_a_process_of_this_host() -> None:
    me = default_worker_id()
    assert me.startswith(local_prefix())
    assert not owner_is_dead(me)  # this very process
    assert not owner_is_dead("otherhost:abcd1234:1:1:aaaaaa")  # not ours to judge
    pid = 2**22 + 17  # above pid_max defaults: no such process
    assert owner_is_dead(f"{local_prefix()}{pid}:123:aaaaaa")
    # pid 1 exists, but was started at another time than this id says: a reused pid.
    assert owner_is_dead(f"{local_prefix()}1:999999999:aaaaaa")


async def test_a_killed_workers_run_is_reclaimed_at_once_by_the_next_worker_on_this_host(
    store_url: str, tmp_path: Path
) -> None:
    """The worker dies (SIGKILL) holding a 300 s lease; the next worker of this host frees the
    run at start and finishes it without doing the first effect again."""
    store = await Store.open(store_url)
    effects, model_log = tmp_path / "effects.log", tmp_path / "model.log"
    agents = build_agents(effects)

    async def never(model: str, request: Any) -> Any:
        raise AssertionError("unused")

    try:
        submitter = Engine(store=store, complete=never, agents=agents)
        run = await submitter.submit("payer", "pay a and b")
        config = {
            "store_url": store_url,
            "effects": str(effects),
            "model_log": str(model_log),
            "run_id": run.id,
            "lease_seconds": 300.0,
            "kill_point": "finished",
            "kill_step": 1,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CRASH_WORKER), json.dumps(config), stderr=asyncio.subprocess.PIPE
        )
        await asyncio.wait_for(proc.wait(), HANG)
        assert proc.returncode == -signal.SIGKILL
        orphan = await store.get_run(run.id)
        assert orphan.status is RunStatus.RUNNING and orphan.lease_owner is not None
        assert orphan.lease_owner.startswith(local_prefix())

        # A worker that does not look cannot claim it: the lease has 300 s to go.
        from _crash_worker import build_engine

        engine = build_engine(store, {**config, "kill_point": None, "lease_seconds": 5.0})
        assert await Worker(engine).run_once(run.id) is None
        worker = Worker(engine)
        assert await worker.reclaim_dead_local() == 1
        done = await worker.run_once(run.id)
        assert done is not None and done.status is RunStatus.COMPLETED, done and done.error
        keys = [line.split("\t")[1] for line in effects.read_text().splitlines()]
        assert keys == [f"{run.id}:1", f"{run.id}:3"]
    finally:
        await store.close()


async def test_a_live_worker_of_this_host_is_not_reclaimed(store: Store) -> None:
    engine = make_engine(store, [Agent(name="echo")], scripted(), options=EngineOptions())
    run = await engine.submit("echo", "x")
    claimed = await store.claim_run(default_worker_id(), lease_seconds=300.0, run_id=run.id)
    assert claimed is not None
    assert await Worker(engine).reclaim_dead_local() == 0
    assert (await store.get_run(run.id)).lease_owner == claimed.lease_owner
