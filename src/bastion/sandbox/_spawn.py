"""Starting sandbox processes: a fresh interpreter each time, or a fork of the zygote.

Owns: the two launchers and the handle the worker keeps on one sandbox process tree (its
control socket, its output pipes, how to kill it and wait for it). Does not own the sandbox's
setup handshake or executions (``_local.py``), nor what runs inside (``_child.py``).

*Exec*: ``python -I -S -B _child.py FD`` per sandbox; its start-up is most of a cold sandbox's
cost. *Zygote*: one such interpreter started once (empty environment, never given code) forks
an outer process per sandbox on request; the sandbox then isolates itself exactly as in the
exec case. Either way no sandbox is a fork of the worker, so none holds the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import marshal
import os
import signal
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bastion.sandbox._errors import SandboxCrashed

CHILD_SCRIPT = str(Path(__file__).with_name("_child.py"))
MAX_FRAME = 64 * 2**20  # above any result the limits allow; a bigger header means corruption


class _Readable(Protocol):
    async def readexactly(self, n: int, /) -> bytes: ...


async def read_frame(reader: _Readable, limit: int = MAX_FRAME) -> dict[str, Any]:
    """A frame from a sandbox: length-prefixed JSON, checked (never unmarshalled)."""
    head = await reader.readexactly(4)
    size = struct.unpack(">I", head)[0]
    if size > limit:
        raise SandboxCrashed(f"The sandbox sent a {size}-byte frame (limit {limit}).")
    try:
        frame = json.loads(await reader.readexactly(size))
    except ValueError as exc:
        raise SandboxCrashed(f"The sandbox sent a malformed frame: {exc}") from exc
    if not isinstance(frame, dict):
        raise SandboxCrashed("The sandbox sent a frame that is not an object.")
    return frame


def write_frame(obj: Mapping[str, Any]) -> bytes:
    """A frame to a sandbox. marshal: the sandbox loads it without importing json (start-up
    time); only the worker writes these, and it never reads marshal back."""
    body = marshal.dumps(dict(obj))
    return struct.pack(">I", len(body)) + body


class _Killer(Protocol):
    def kill(self) -> None: ...
    async def wait(self) -> None: ...
    @property
    def exited(self) -> bool: ...


@dataclass(kw_only=True)
class Launched:
    """One sandbox process tree, from the worker's side."""

    pid: int
    reader: asyncio.StreamReader  # control socket
    writer: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    process: _Killer
    pipes: list[asyncio.BaseTransport] = field(default_factory=list)  # ours to close
    landlock_abi: int = 0
    preloaded: list[str] = field(default_factory=list)

    def kill(self) -> None:
        # Killing the outer process is enough: the sandbox's pid 1 has PDEATHSIG=SIGKILL, and
        # when pid 1 dies the kernel kills everything else in its pid namespace.
        self.process.kill()
        self.writer.close()

    async def reap(self) -> None:
        self.kill()
        await self.process.wait()
        # Read the pipes to their end: a transport left paused on a full buffer never sees EOF,
        # never closes, and is finalised after its event loop is gone.
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(5):
                for stream in (self.stdout, self.stderr):
                    while await stream.read(65536):
                        pass
        for pipe in self.pipes:
            pipe.close()

    @property
    def alive(self) -> bool:
        return not self.process.exited and not self.reader.at_eof()


class _ExecProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    def kill(self) -> None:
        # Not Process.kill(): it polls, and a reap behind asyncio's back loses the exit status.
        # Once reaped, the pid may be reused: never signal it again.
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def wait(self) -> None:
        await self._proc.wait()

    @property
    def exited(self) -> bool:
        return self._proc.returncode is not None


async def exec_launch(python: str, env: dict[str, str]) -> Launched:
    """A fresh interpreter for one sandbox."""
    parent_sock, child_sock = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-I",
            "-S",
            "-B",
            CHILD_SCRIPT,
            str(child_sock.fileno()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(child_sock.fileno(),),
            env=env,
            cwd="/",
            start_new_session=True,
        )
    except BaseException:
        parent_sock.close()
        raise
    finally:
        child_sock.close()
    try:
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
    except BaseException:
        parent_sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.stdout is not None and proc.stderr is not None
    return Launched(
        pid=proc.pid,
        reader=reader,
        writer=writer,
        stdout=proc.stdout,
        stderr=proc.stderr,
        process=_ExecProcess(proc),
    )


class _PidfdProcess:
    """A process that is not our child (the zygote's): signalled and watched by pidfd, which
    never refers to a recycled pid."""

    def __init__(self, pid: int) -> None:
        self._fd = os.pidfd_open(pid)
        self._exited = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self._fd, self._on_exit)

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        if not self._exited.done():
            self._exited.set_result(None)

    def kill(self) -> None:
        if not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)

    async def wait(self) -> None:
        await self._exited

    @property
    def exited(self) -> bool:
        return self._exited.done()


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


class Zygote:
    """The template interpreter that forks sandboxes; one per ``NamespaceSandbox``."""

    def __init__(self, python: str, env: dict[str, str], preload: list[str]) -> None:
        self._python = python
        self._env = env
        self._preload = preload
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                "-S",
                "-B",
                CHILD_SCRIPT,
                "--zygote",
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=self._env,
                cwd="/",
                start_new_session=True,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(ours, write_frame({"env": self._env, "preload": self._preload}))
        reader = _SockReader(ours)
        msg = await read_frame(reader)
        if msg.get("event") != "ready":
            raise SandboxCrashed(f"The sandbox zygote did not start: {msg!r}")

    async def launch(self) -> Launched:
        if self._sock is None or self._proc is None or self._proc.returncode is not None:
            raise SandboxCrashed("The sandbox zygote is not running.")
        parent_sock, child_sock = socket.socketpair()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        # The exchange runs as its own task and owns the child's ends: if we are cancelled it
        # still finishes, so the zygote's next answer is never mistaken for this one, and the
        # descriptors it sends are never closed (and their numbers reused) under it.
        exchange = asyncio.get_running_loop().create_task(self._exchange(child_sock, out_w, err_w))
        exchange.add_done_callback(lambda t: t.cancelled() or t.exception())  # never unretrieved
        try:
            pid = await asyncio.shield(exchange)
        except BaseException as exc:
            # Ours are closed: an outer the zygote did fork reads EOF on its control socket
            # and exits by itself.
            for fd in (out_r, err_r):
                os.close(fd)
            parent_sock.close()
            if isinstance(exc, OSError | asyncio.IncompleteReadError):
                raise SandboxCrashed(f"The sandbox zygote failed: {exc!r}") from exc
            raise
        # From here on the outer process exists: whatever fails (or is cancelled), kill it.
        process = _PidfdProcess(pid)
        pipes: list[asyncio.BaseTransport] = []
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
            stdout, out_t = await _pipe_reader(out_r)
            pipes.append(out_t)
            stderr, err_t = await _pipe_reader(err_r)
            pipes.append(err_t)
        except BaseException:
            process.kill()
            parent_sock.close()
            for t in pipes:
                t.close()
            for fd in (out_r, err_r)[len(pipes) :]:
                os.close(fd)
            raise
        return Launched(
            pid=pid,
            reader=reader,
            writer=writer,
            stdout=stdout,
            stderr=stderr,
            process=process,
            pipes=pipes,
        )

    async def _exchange(self, child_sock: socket.socket, out_w: int, err_w: int) -> int:
        assert self._sock is not None
        try:
            async with self._lock:
                # One byte and three descriptors; the answer is the new outer process's pid.
                socket.send_fds(self._sock, [b"s"], [child_sock.fileno(), out_w, err_w])
                head = await _SockReader(self._sock).readexactly(4)
        finally:
            child_sock.close()
            os.close(out_w)
            os.close(err_w)
        pid: int = struct.unpack(">I", head)[0]
        return pid

    async def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            await self._proc.wait()


class _SockReader:
    """``readexactly`` over a non-blocking socket on the running loop."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def readexactly(self, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        while len(buf) < n:
            chunk = await loop.sock_recv(self._sock, n - len(buf))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), n)
            buf += chunk
        return bytes(buf)
