"""A worker process for the multi-worker tests: claims any runnable run until none is left.

Run as ``python _pool_worker.py CONFIG_JSON`` (the config of ``_crash_worker``). It prints
``ready`` once its store is open and starts claiming when a line arrives on stdin, so the test
can start several workers at the same moment; at the end it prints how many executions it did.
With a kill point it SIGKILLs itself there, in whichever run gets there first.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from _crash_worker import build_engine

from bastion.core.records import RunStatus
from bastion.engine import Worker
from bastion.store import Store

OPEN = [RunStatus.PENDING, RunStatus.RUNNING]


async def main(config: dict[str, Any]) -> int:
    store = await Store.open(config["store_url"], migrate=False)
    try:
        worker = Worker(build_engine(store, config))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await worker.run_once() is None:
                # Runs leased by the other worker (or by a dead one) are still open.
                if not await store.list_runs(status=OPEN, limit=1):
                    print(json.dumps({"executed": worker.executed}), flush=True)
                    return 0
                await asyncio.sleep(0.05)
        return 3
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
