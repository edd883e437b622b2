"""The warm pool, concurrency, and failing closed when the kernel refuses a layer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bastion.sandbox import Limits, NamespaceOptions, NamespaceSandbox, SandboxCrashed


async def test_pool_is_warm_and_refills() -> None:
    async with NamespaceSandbox(NamespaceOptions(pool_size=2)) as sb:
        first = await sb.execute("print(1)")
        assert first.timing is not None and first.timing.warm
        async with asyncio.timeout(30):
            await sb.wait_warm()  # refill runs in the background, after the execution
        assert sb.warm == 2
        again = await sb.execute("print(2)")
        assert again.timing is not None and again.timing.warm and again.stdout == "2\n"


async def test_cold_when_no_pool_or_other_disk_limits() -> None:
    async with NamespaceSandbox(NamespaceOptions(pool_size=0)) as sb:
        r = await sb.execute("print(1)")
        assert r.ok and r.timing is not None and not r.timing.warm
    async with NamespaceSandbox(NamespaceOptions(pool_size=1)) as sb:
        r = await sb.execute("print(1)", limits=Limits(disk_bytes=8 * 2**20))
        assert r.ok and r.timing is not None and not r.timing.warm


async def test_concurrent_executions_are_separate(sandbox: NamespaceSandbox) -> None:
    code = (
        "import os\nopen('me', 'w').write('{i}')\nprint(open('me').read(), len(os.listdir('.')))\n"
    )
    results = await asyncio.gather(*(sandbox.execute(code.format(i=i)) for i in range(6)))
    assert [r.stdout for r in results] == [f"{i} 1\n" for i in range(6)]


async def test_a_pooled_sandbox_that_died_is_replaced(sandbox: NamespaceSandbox) -> None:
    async with asyncio.timeout(30):
        await sandbox.wait_warm()
    victim = sandbox._ready[0]
    os.kill(victim.pid, signal.SIGKILL)
    await victim.process.wait()
    r = await sandbox.execute("print('still works')")
    assert r.ok and r.stdout == "still works\n"


async def test_closed_sandbox_refuses() -> None:
    sb = NamespaceSandbox(NamespaceOptions(pool_size=1))
    await sb.start()
    await sb.aclose()
    with pytest.raises(SandboxCrashed):
        await sb.execute("print(1)")


def test_fails_closed_without_user_namespaces() -> None:
    """A worker whose process may not create namespaces (seccomp forbids unshare, as some
    container runtimes do) gets SandboxUnsupported naming the layer; nothing runs."""
    script = textwrap.dedent(
        """
        import asyncio, ctypes
        from bastion.sandbox._seccomp import seccomp_program
        from bastion.sandbox import NamespaceSandbox, NamespaceOptions, SandboxUnsupported

        prog = seccomp_program()
        buf = ctypes.create_string_buffer(prog, len(prog))

        class Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(38, 1, 0, 0, 0) == 0
        f = Fprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
        assert libc.prctl(22, 2, ctypes.byref(f), 0, 0) == 0

        async def main():
            sb = NamespaceSandbox(NamespaceOptions(pool_size=0))
            try:
                await sb.start()
                r = await sb.execute("print('RAN')")
                print(r.stdout)
            except SandboxUnsupported as exc:
                print("REFUSED", exc.layer, exc.code)
                print("HINT", exc.hint)

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert "RAN" not in proc.stdout, proc
    assert "REFUSED user_namespace sandbox_unsupported" in proc.stdout, proc
    assert "unprivileged_userns_clone" in proc.stdout


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


async def test_supervisor_lost_is_reported(sandbox: NamespaceSandbox) -> None:
    """If the sandbox's supervisor dies under the code (here: killed from the host), the
    execution is reported as sandbox_lost, not as the code's failure."""
    async with asyncio.timeout(30):
        await sandbox.wait_warm()
    victim = sandbox._ready[0]
    outer = victim.pid

    async def kill_supervisor() -> None:
        await asyncio.sleep(0.3)
        for pid in _children(outer):
            os.kill(pid, signal.SIGKILL)

    killer = asyncio.create_task(kill_supervisor())
    r = await sandbox.execute("import time\ntime.sleep(5)\n", limits=Limits(wall_seconds=10))
    await killer
    assert r.killed_reason == "sandbox_lost" and r.exit_status is None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _tree(pid: int) -> list[int]:
    out = [pid]
    for child in _children(pid) if _alive(pid) else []:
        out += _tree(child)
    return out


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "exec"])
def test_a_dead_worker_leaves_no_sandbox_running(zygote: bool) -> None:
    """SIGKILL the worker mid-execution: every sandbox process dies with it."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from bastion.sandbox import Limits, NamespaceOptions, NamespaceSandbox

        async def main():
            sb = NamespaceSandbox(NamespaceOptions(pool_size=1, zygote={zygote}))
            await sb.start()
            print("READY", flush=True)
            await sb.execute("while True: pass", limits=Limits(wall_seconds=120, cpu_seconds=120))

        asyncio.run(main())
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + 30
        while len(tree := _tree(worker.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)  # worker, outer, pid 1 and the looping code at least
        assert len(tree) >= 4, tree
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in tree[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in tree[1:] if _alive(p)], tree
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
