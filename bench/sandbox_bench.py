"""Sandbox latency and throughput: ``print(1)`` through the namespace sandbox.

Run: ``.venv/bin/python bench/sandbox_bench.py [--n 200] [--seconds 10]``. Prints a table with
the machine noted. Three figures:

* warm: a pre-isolated sandbox is waiting (the pool had time to refill); time of ``execute()``.
* cold: no pool; each call builds its sandbox (namespaces, mounts, filters), either forked from
  the zygote (the default) or from a freshly executed interpreter (``zygote=False``).
* throughput: 2 concurrent callers for ``--seconds`` against a pool of 2; executions per second
  and the latency they saw (the pool refills in the background while they run).

Targets (issue 4): p50 <= 10 ms warm, <= 60 ms cold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time

from bastion.sandbox import NamespaceOptions, NamespaceSandbox

CODE = "print(1)"


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _one(sb: NamespaceSandbox) -> float:
    t0 = time.perf_counter()
    r = await sb.execute(CODE)
    elapsed = time.perf_counter() - t0
    if r.stdout != "1\n":
        raise SystemExit(f"unexpected result: {r}")
    return elapsed


async def warm(n: int) -> tuple[list[float], int]:
    samples: list[float] = []
    not_warm = 0
    async with NamespaceSandbox(NamespaceOptions(pool_size=2)) as sb:
        for _ in range(n):
            await sb.wait_warm()  # measure the warm path: let the background refill finish
            samples.append(await _one(sb))
    return samples, not_warm


async def cold(n: int, zygote: bool) -> list[float]:
    async with NamespaceSandbox(NamespaceOptions(pool_size=0, zygote=zygote)) as sb:
        return [await _one(sb) for _ in range(n)]


async def throughput(seconds: float, callers: int) -> tuple[int, list[float], float]:
    samples: list[float] = []
    async with NamespaceSandbox(NamespaceOptions(pool_size=2)) as sb:
        await sb.wait_warm()
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < deadline:
                samples.append(await _one(sb))

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - t0
    return len(samples), samples, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="calls for the warm and cold rows")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput duration")
    args = parser.parse_args()

    print(
        f"machine: nproc={os.cpu_count()} kernel={platform.release()} "
        f"python={platform.python_version()} ({sys.executable})"
    )
    # Other work on the machine shows up in every figure: say how busy it was.
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    warm_samples, _ = await warm(args.n)
    cold_zygote = await cold(args.n, zygote=True)
    cold_exec = await cold(args.n, zygote=False)
    count, tp_samples, elapsed = await throughput(args.seconds, callers=2)

    print(f"\n{'case':<36}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    rows = (
        ("warm pool (print(1))", warm_samples),
        ("cold, zygote fork (print(1))", cold_zygote),
        ("cold, fresh interpreter (print(1))", cold_exec),
    )
    for name, s in rows:
        print(
            f"{name:<36}{len(s):>6}{_pct(s, 0.5):>10.2f}{_pct(s, 0.95):>10.2f}"
            f"{statistics.mean(s) * 1000:>10.2f}"
        )
    print(
        f"{'2 concurrent callers, pool of 2':<36}{count:>6}{_pct(tp_samples, 0.5):>10.2f}"
        f"{_pct(tp_samples, 0.95):>10.2f}{statistics.mean(tp_samples) * 1000:>10.2f}"
    )
    print(
        f"\nthroughput: {count / elapsed:.1f} executions/s with 2 concurrent callers "
        f"({elapsed:.1f} s)"
    )
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("targets: warm p50 <= 10 ms, cold p50 <= 60 ms")


if __name__ == "__main__":
    asyncio.run(main())
