"""The worker process ``bastion demo`` kills: ``python -m bastion.demo._child``.

Owns: executing one run in a fresh process with a ``Recorder`` that SIGKILLs this process
``--kill after`` issue_refund (when the next step's start is journaled) or ``--kill during`` it
(the refund is made, its result not yet journaled). Nothing is cleaned up: the lease stays on
the run until it expires, as after a real crash.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from bastion.core.errors import BastionError
from bastion.demo._setup import Recorder, build_demo
from bastion.demo.shop import Shop


async def _main(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    recorder = Recorder(Shop(directory / "shop.db"), process="killed worker", kill=args.kill)
    demo = build_demo(
        directory, model=args.model, config=args.config, env=os.environ, observer=recorder
    )
    print(f"worker pid {os.getpid()} claims run {args.run_id}", flush=True)
    async with demo.bastion as bastion:
        run = await bastion.resume(args.run_id)
    print(f"the run stopped as {run.status.value} before the kill point", flush=True)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bastion.demo._child")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--kill", choices=["after", "during"], default="after")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except BastionError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
