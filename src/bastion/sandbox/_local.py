"""The default backend: Linux namespaces, seccomp and Landlock, with a pool of warm sandboxes.

Owns: the read-only view a sandbox gets, the worker's half of a sandbox's setup (its config,
the uid maps when the worker is root), the pool, and turning one execution into an
``ExecResult`` (output caps, the wall-clock kill, reasons). Does not own: launching processes
(``_spawn.py``), what happens inside the sandbox (``_child.py``, ``_child_run.py``) or the
seccomp deny list (``_seccomp.py``).

Why not bubblewrap: a warm pool needs a sandbox that is already isolated *before* it knows its
code, and that waits on a socket; and when the worker runs as root, bubblewrap maps the sandbox
to host root, for which the kernel does not enforce ``RLIMIT_NPROC`` (fork bombs). Here the
worker maps it to an unprivileged host uid (65534 by default). See docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import sysconfig
import time
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bastion.core.errors import UserError
from bastion.sandbox._errors import SandboxCrashed, SandboxUnsupported
from bastion.sandbox._seccomp import seccomp_program
from bastion.sandbox._spawn import Launched, Zygote, exec_launch, read_frame, write_frame
from bastion.sandbox._types import (
    ExecResult,
    KilledReason,
    Limits,
    ResourceUsage,
    Timing,
    check_output_pattern,
)
from bastion.sandbox._types import check_input_name as _check_name

DEV_NODES = ("null", "zero", "full", "random", "urandom")
DEFAULT_PRELOAD: tuple[str, ...] = (
    "collections",
    "csv",
    "datetime",
    "decimal",
    "functools",
    "itertools",
    "json",
    "math",
    "random",
    "re",
    "statistics",
    "string",
    "textwrap",
    "traceback",
    "linecache",
    "glob",
    "fnmatch",
    "types",
    "builtins",
)
# Fixed, known values; nothing of the worker's environment (secrets) reaches the code.
SANDBOX_ENV: dict[str, str] = {
    "HOME": "/work",
    "TMPDIR": "/work",
    "LANG": "C.UTF-8",
    "PATH": "/nonexistent",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_SETUP_TIMEOUT = 30.0
_DRAIN_TIMEOUT = 2.0


@dataclass(kw_only=True, frozen=True)
class NamespaceOptions:
    """How the namespace backend builds its sandboxes."""

    pool_size: int = 2
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    landlock: Literal["require", "best_effort", "off"] = "best_effort"
    # Used when the worker is root: the sandbox runs as this host uid/gid, never as root.
    host_uid: int = 65534
    host_gid: int = 65534
    python: str | None = None  # default: the worker's interpreter (its real path)
    # Fork sandboxes from a template interpreter (fast) instead of starting one each time.
    zygote: bool = True
    site_dirs: tuple[str, ...] | None = None  # default: the worker's site-packages
    default_limits: Limits = field(default_factory=Limits)


def _default_site_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    out: list[str] = []
    for key in ("purelib", "platlib"):
        p = os.path.realpath(paths[key])
        if os.path.isdir(p) and p not in out:
            out.append(p)
    return tuple(out)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def build_view(opts: NamespaceOptions) -> dict[str, Any]:
    """The read-only filesystem the sandbox sees: runtime libraries and the interpreter only."""
    binds: list[dict[str, str]] = []
    bound: list[str] = []

    def ro(src: str, dst: str | None = None) -> None:
        if os.path.isdir(src) and not _under(src, bound):
            binds.append({"src": src, "dst": dst or src, "kind": "ro"})
            bound.append(src)

    for d in ("/usr/lib", "/usr/lib64", "/usr/share/zoneinfo"):
        ro(d)
    prefix = os.path.realpath(sys.base_prefix)
    if prefix in ("/", "/usr"):
        # A system interpreter: its library is under /usr/lib already; never bind all of /usr.
        paths = sysconfig.get_paths()
        ro(os.path.realpath(paths["stdlib"]))
        ro(os.path.realpath(paths["platstdlib"]))
    else:
        ro(prefix)  # at the same path: the interpreter finds its library from its own location
    symlinks: list[list[str]] = []
    for top in ("/lib", "/lib64"):
        if os.path.islink(top):
            symlinks.append([os.readlink(top), top])
        else:
            ro(top)
    # Site directories are mounted under /opt so that they can never collide with /work.
    site_dst: list[str] = []
    for i, src in enumerate(opts.site_dirs if opts.site_dirs is not None else _default_site_dirs()):
        if os.path.isdir(src):
            dst = f"/opt/site-{i}"
            binds.append({"src": src, "dst": dst, "kind": "ro"})
            site_dst.append(dst)
    for n in DEV_NODES:
        binds.append({"src": f"/dev/{n}", "dst": f"/dev/{n}", "kind": "dev"})
    return {"binds": binds, "symlinks": symlinks, "site_dirs": site_dst}


class _ResultFrame(BaseModel):
    """The supervisor's report, validated: the worker trusts no shape it did not check."""

    model_config = ConfigDict(extra="ignore")

    event: Literal["result"]
    exit_status: int
    reason: KilledReason | None = None
    cpu_user: float
    cpu_system: float
    max_rss_kb: int
    files: dict[str, str]
    skipped: dict[str, str]


class NamespaceSandbox:
    """The default ``Sandbox``: isolated processes (never forks of the worker), pre-warmed,
    each used for exactly one execution."""

    backend = "namespaces"

    def __init__(self, options: NamespaceOptions | None = None) -> None:
        self._opts = options or NamespaceOptions()
        self._python = self._opts.python or os.path.realpath(sys.executable)
        self._view = build_view(self._opts)
        self._ready: deque[Launched] = deque()
        self._waiters: deque[asyncio.Future[Launched]] = deque()
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()  # pool refills: cancelled on close
        self._reaps: set[asyncio.Task[None]] = set()  # reaping the used: awaited on close
        self._closed = False
        self._zygote: Zygote | None = None
        self._zygote_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._map_by_parent = os.geteuid() == 0
        self.landlock_abi = 0  # as reported by the last sandbox that became ready

    async def __aenter__(self) -> NamespaceSandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Checks that every layer works (raises ``SandboxUnsupported`` if not), fills the pool."""
        if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
            raise SandboxUnsupported("platform", f"{sys.platform}/{os.uname().machine}")
        seccomp_program()
        if self._opts.zygote and self._zygote is None:
            self._zygote = await self._start_zygote()
        pooled = self._opts.pool_size > 0
        proc = await self._spawn(self._opts.default_limits, preload=pooled)
        if pooled:
            self._ready.append(proc)
        else:
            await proc.reap()
        self._refill()

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._reaps, return_exceptions=True)
        while self._ready:
            await self._ready.popleft().reap()
        while self._waiters:
            self._waiters.popleft().cancel()
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None

    @property
    def warm(self) -> int:
        """How many pre-isolated sandboxes are waiting."""
        return len(self._ready)

    async def wait_warm(self, count: int | None = None) -> None:
        """Waits until ``count`` (default: the pool size) sandboxes are warm; bound it with
        ``asyncio.timeout``."""
        want = self._opts.pool_size if count is None else min(count, self._opts.pool_size)
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._ready) >= want)

    # ---- pool ---------------------------------------------------------------------------------

    def _background(self, coro: Coroutine[Any, Any, None], *, reap: bool = False) -> None:
        tasks = self._reaps if reap else self._tasks
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _refill(self) -> None:
        while not self._closed and len(self._ready) + self._starting < self._opts.pool_size:
            self._starting += 1
            self._background(self._warm_one())

    async def _warm_one(self) -> None:
        try:
            proc = await self._spawn(self._opts.default_limits, preload=True)
        except (SandboxUnsupported, SandboxCrashed) as exc:
            self._starting -= 1
            # Fail closed: whoever waits for this sandbox gets the refusal, not a fallback.
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
                    break
            return
        self._starting -= 1
        if self._closed:
            await proc.reap()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(proc)
                return
        self._ready.append(proc)
        async with self._changed:
            self._changed.notify_all()

    async def _acquire(self, limits: Limits) -> tuple[Launched, bool]:
        pool = self._opts.default_limits
        same_disk = (limits.disk_bytes, limits.max_files) == (pool.disk_bytes, pool.max_files)
        if same_disk and self._opts.pool_size > 0:
            while self._ready:
                proc = self._ready.popleft()
                if proc.alive:
                    return proc, True
                self._background(proc.reap(), reap=True)
                self._refill()
            if self._starting > len(self._waiters):
                # A sandbox is already being built: waiting for it beats building another.
                waiter: asyncio.Future[Launched] = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                return await waiter, True
        return await self._spawn(limits, preload=False), False

    # ---- spawning -----------------------------------------------------------------------------

    async def _launch(self) -> Launched:
        zygote = self._zygote
        if zygote is None:
            return await exec_launch(self._python, SANDBOX_ENV)
        try:
            return await zygote.launch()
        except SandboxCrashed:
            # A dead zygote is replaced once (by whichever caller gets here first); a second
            # failure is the operator's to see.
            async with self._zygote_lock:
                if self._zygote is zygote:
                    await zygote.close()
                    self._zygote = await self._start_zygote()
                current = self._zygote
            if current is None:
                raise
            return await current.launch()

    async def _start_zygote(self) -> Zygote:
        zygote = Zygote(self._python, SANDBOX_ENV, list(self._opts.preload))
        try:
            async with asyncio.timeout(_SETUP_TIMEOUT):
                await zygote.start()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            await zygote.close()
            raise SandboxCrashed(f"The sandbox zygote failed to start: {exc!r}") from exc
        return zygote

    async def _spawn(self, limits: Limits, *, preload: bool) -> Launched:
        sandbox = await self._launch()
        reader, writer = sandbox.reader, sandbox.writer
        config = {
            **self._view,
            "map_by_parent": self._map_by_parent,
            "host_uid": os.getuid(),
            "host_gid": os.getgid(),
            "workdir": {"bytes": limits.disk_bytes, "inodes": limits.max_files},
            "seccomp": seccomp_program(),
            "landlock": self._opts.landlock,
            # A cold sandbox runs its code at once: preloading would only delay it.
            "preload": list(self._opts.preload) if preload else [],
            "env": SANDBOX_ENV,
        }
        try:
            writer.write(write_frame(config))
            async with asyncio.timeout(_SETUP_TIMEOUT):
                while True:
                    msg = await read_frame(reader)
                    if msg["event"] == "need_map":
                        self._write_maps(sandbox.pid)
                        writer.write(write_frame({"event": "mapped"}))
                    elif msg["event"] == "error":
                        raise SandboxUnsupported(str(msg["layer"]), str(msg["detail"]))
                    elif msg["event"] == "ready":
                        sandbox.landlock_abi = self.landlock_abi = int(msg["landlock_abi"])
                        sandbox.preloaded = list(msg["preloaded"])
                        return sandbox
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            await sandbox.reap()
            err = (await sandbox.stderr.read()).decode(errors="replace")[-2000:]
            raise SandboxCrashed(
                f"The sandbox process failed during setup: {exc!r}", stderr=err
            ) from exc
        except BaseException:
            await sandbox.reap()
            raise

    def _write_maps(self, pid: int) -> None:
        # The worker is root in the initial namespace, so it may map the sandbox's root to an
        # unprivileged host uid: files, signals and RLIMIT_NPROC then apply as to that user.
        uid, gid = self._opts.host_uid, self._opts.host_gid
        for name, text in (("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as fh:
                fh.write(text)

    # ---- executing ----------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        *,
        files: Mapping[str, bytes] | None = None,
        outputs: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> ExecResult:
        if self._closed:
            raise SandboxCrashed("This sandbox has been closed.")
        limits = limits or self._opts.default_limits
        payload = {_check_name(name): bytes(data) for name, data in (files or {}).items()}
        patterns = [check_output_pattern(p) for p in outputs]
        if sum(len(d) for d in payload.values()) > limits.disk_bytes:
            raise UserError(
                "The input files are larger than the sandbox's working directory.",
                hint="Send smaller files or raise Limits.disk_bytes.",
            )
        t_setup = time.perf_counter()
        proc, warm = await self._acquire(limits)
        setup = time.perf_counter() - t_setup
        try:
            return await self._run(proc, code, payload, patterns, limits, warm, setup)
        finally:
            # Used once: it is killed in _run; reaping and refilling happen after we answer.
            proc.kill()
            self._background(proc.reap(), reap=True)
            self._refill()

    async def _run(
        self,
        proc: Launched,
        code: str,
        payload: dict[str, bytes],
        outputs: list[str],
        limits: Limits,
        warm: bool,
        setup: float,
    ) -> ExecResult:
        overflow = asyncio.Event()
        out = _Capture(proc.stdout, limits.max_output_bytes, overflow)
        err = _Capture(proc.stderr, limits.max_output_bytes, overflow)
        request = {
            "filename": "main.py",
            "code": code,
            "files": payload,
            "outputs": outputs,
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "processes": limits.processes,
                "file_bytes": limits.max_file_bytes,
                "open_files": limits.open_files,
                "output_file_bytes": limits.output_file_bytes,
            },
        }
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(out.run()), loop.create_task(err.run())]
        result_task = loop.create_task(read_frame(proc.reader))
        overflow_task: asyncio.Task[Any] = loop.create_task(overflow.wait())
        reason: KilledReason | None = None
        msg: dict[str, Any] | None = None
        try:
            proc.writer.write(write_frame(request))
            waiting: set[asyncio.Task[Any]] = {result_task, overflow_task}
            done, _ = await asyncio.wait(
                waiting,
                timeout=limits.wall_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if result_task in done and result_task.exception() is None:
                msg = result_task.result()
            elif overflow_task in done:
                reason = "output_limit"
            elif not done:
                reason = "wall_time"
            else:
                reason = "sandbox_lost"
        finally:
            wall = time.perf_counter() - t0
            proc.kill()
            for task in (result_task, overflow_task):
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a lost sandbox is reported, not logged
                task.cancel()
            await asyncio.wait(tasks, timeout=_DRAIN_TIMEOUT)
            for t in tasks:
                t.cancel()
        if msg is not None and msg.get("event") == "error":
            if msg.get("layer") == "inputs":
                raise UserError(
                    f"The input files could not be written: {msg.get('detail')}",
                    hint="Send fewer or smaller files, or raise Limits.disk_bytes / max_files.",
                )
            raise SandboxCrashed(f"The sandbox refused the request: {msg.get('detail')}")
        exit_status: int | None = None
        usage = ResourceUsage()
        files: dict[str, bytes] = {}
        skipped: dict[str, str] = {}
        if msg is not None:
            try:
                report = _ResultFrame.model_validate(msg)
                files = {k: base64.b64decode(v, validate=True) for k, v in report.files.items()}
            except (ValidationError, ValueError) as exc:
                raise SandboxCrashed(f"The sandbox sent an invalid report: {exc}") from exc
            exit_status = report.exit_status
            reason = "output_limit" if out.truncated or err.truncated else report.reason
            usage = ResourceUsage(
                cpu_user_seconds=report.cpu_user,
                cpu_system_seconds=report.cpu_system,
                max_rss_kb=report.max_rss_kb,
            )
            skipped = report.skipped
        return ExecResult(
            stdout=out.text(),
            stderr=err.text(),
            exit_status=exit_status,
            killed_reason=reason,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            files=files,
            files_skipped=skipped,
            usage=usage,
            timing=Timing(wall_seconds=wall, setup_seconds=setup, warm=warm),
            backend=self.backend,
        )


class _Capture:
    """Reads one output stream up to a cap; past it, flags the overflow (the run is killed)."""

    def __init__(self, stream: asyncio.StreamReader, cap: int, overflow: asyncio.Event) -> None:
        self._stream = stream
        self._cap = cap
        self._overflow = overflow
        self._buf = bytearray()
        self.truncated = False

    async def run(self) -> None:
        while chunk := await self._stream.read(65536):
            if self.truncated:
                continue  # the run is being killed; keep reading so the pipe reaches EOF
            room = self._cap - len(self._buf)
            if len(chunk) > room:
                self._buf += chunk[: max(room, 0)]
                self.truncated = True
                self._overflow.set()
            else:
                self._buf += chunk

    def text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")
