"""The sandbox's side of one execution, and the framing both sandbox scripts speak.

Owns: writing the input files, running the code in a child with its rlimits, collecting the
declared outputs, reporting to the worker; and the frames on the control socket. Does not own
isolation (``_child.py``, which imports this module at start-up, before it isolates itself).

Like ``_child.py`` this runs in the sandbox's own interpreter, never in the worker: standard
library only, and only builtin modules at import (start-up time is the cost of a sandbox).
Frames are a 4-byte big-endian length and a body: ``marshal`` from the worker (trusted, fast to
load), JSON towards the worker (which must never unmarshal what a sandbox wrote).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module; ``signal`` pulls in ``enum``
import binascii
import errno
import marshal
import os
import resource
import stat
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# ---- framing --------------------------------------------------------------------------------


_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)} | {ord('"'): '\\"', ord("\\"): "\\\\"}


def _dumps(obj: object) -> str:
    """A small JSON encoder (``json`` costs ~4 ms of start-up): str, int, float, bool, None,
    list and dict with str keys are all the worker ever gets."""
    if obj is None:
        return "null"
    if obj is True or obj is False:
        return "true" if obj else "false"
    if isinstance(obj, int | float):
        return repr(obj)
    if isinstance(obj, str):
        return '"' + obj.translate(_ESCAPES) + '"'
    if isinstance(obj, list | tuple):
        return "[" + ",".join(_dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(_dumps(str(k)) + ":" + _dumps(v) for k, v in obj.items()) + "}"
    raise TypeError(type(obj).__name__)


def send(fd: int, obj: dict[str, Any]) -> None:
    # Lone surrogates (undecodable file names) become \udcXX escapes, which JSON allows.
    body = _dumps(obj).encode("utf-8", "backslashreplace")
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


def recv(fd: int) -> dict[str, Any]:
    head = _recv_exact(fd, 4)
    frame: dict[str, Any] = marshal.loads(_recv_exact(fd, struct.unpack(">I", head)[0]))
    return frame


def _recv_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("worker closed the control socket")
        buf += chunk
    return bytes(buf)


# ---- one execution --------------------------------------------------------------------------


def _write_inputs(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = os.path.join("/work", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def _collect_outputs(patterns: list[str], max_bytes: int) -> tuple[dict[str, str], dict[str, str]]:
    found: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if not patterns:
        return found, skipped
    import glob  # only when files are asked for: it imports ``re``

    total = 0
    for pattern in patterns:
        for path in sorted(glob.glob(pattern, root_dir="/work", recursive=True)):
            if path in found or path in skipped:
                continue
            full = os.path.join("/work", path)
            if not os.path.realpath(full).startswith("/work/"):
                skipped[path] = "outside the working directory"
                continue
            try:
                # O_NOFOLLOW + fstat: a symlink or a fifo planted by the code is refused.
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as exc:
                skipped[path] = f"not a regular file ({exc.strerror})"
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    skipped[path] = "not a regular file"
                elif total + st.st_size > max_bytes:
                    skipped[path] = f"over the {max_bytes}-byte limit for returned files"
                else:
                    data = os.read(fd, st.st_size + 1)[: st.st_size]
                    total += len(data)
                    found[path] = binascii.b2a_base64(data, newline=False).decode("ascii")
            finally:
                os.close(fd)
    return found, skipped


_REASONS = {
    errno.EAGAIN: "process_limit",
    errno.EFBIG: "file_size_limit",
    errno.ENOSPC: "disk_limit",
}


def _run_code(request: dict[str, Any], baseline: int, status_w: int) -> int:
    import builtins

    limits: dict[str, int] = request["limits"]
    cpu = limits["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    mem = baseline + limits["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    # The supervisor (pid 1) already counts as one process of this uid in this namespace.
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"] + 1,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    filename = str(request["filename"])
    source = str(request["code"])
    module = type(sys)("__main__")
    module.__file__ = filename
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    sys.argv = [filename]
    reason = ""
    try:
        exec(compile(source, filename, "exec"), module.__dict__)  # the point of it all
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code & 0xFF
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # noqa: BLE001 - report like the interpreter does
        if isinstance(exc, MemoryError):
            reason = "memory_limit"
        elif isinstance(exc, OSError) and exc.errno in _REASONS:
            reason = _REASONS[exc.errno]
        import linecache
        import traceback

        # The source is not on disk: give it to linecache so the traceback shows the lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        # Skip our own frame so the traceback reads as if the interpreter ran main.py.
        traceback.print_exception(
            type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None
        )
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib would cost start-up time
            stream.flush()
        except (OSError, ValueError):
            pass
    if reason:
        os.write(status_w, reason.encode())
    return code


def serve(sock: int, request: dict[str, Any], baseline: int) -> int:
    limits: dict[str, int] = request["limits"]
    try:
        _write_inputs(request["files"])
    except OSError as exc:
        send(sock, {"event": "error", "layer": "inputs", "detail": str(exc)})
        return 70
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(sock)
        os.close(status_r)
        os._exit(_run_code(request, baseline, status_w))
    os.close(status_w)
    # Only the code holds the output pipes now: the worker sees EOF as soon as it is done.
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    reason = os.read(status_r, 64).decode()
    os.close(status_r)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    cpu_used = usage.ru_utime + usage.ru_stime
    if sig == _signal.SIGXCPU or (sig == _signal.SIGKILL and cpu_used >= limits["cpu_seconds"]):
        reason = "cpu_time"
    elif sig is not None and not reason:
        reason = "signal"
    files, skipped = _collect_outputs(request["outputs"], limits["output_file_bytes"])
    send(
        sock,
        {
            "event": "result",
            "exit_status": os.waitstatus_to_exitcode(status),
            "signal": sig,
            "reason": reason or None,
            "cpu_user": usage.ru_utime,
            "cpu_system": usage.ru_stime,
            "max_rss_kb": usage.ru_maxrss,
            "files": files,
            "skipped": skipped,
        },
    )
    return 0
