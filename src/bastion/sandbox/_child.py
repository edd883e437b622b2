"""The sandbox's own side: isolates a fresh interpreter, warms it, runs one piece of code.

Owns: everything that happens inside an execution's process tree, from namespaces and mounts to
running the user's code and sending back its result. Does not own: limits policy, pooling or
anything about the worker (that is ``_local.py``, on the host side).

This file is run as a *script* by a freshly executed interpreter (``python -I -S -B _child.py
FD``), never imported by the worker: the sandbox shares no memory with the worker's process.
It may therefore import only the standard library, and everything it needs from ``ctypes``
is declared here, in one place.

Process tree (host view)::

    worker ── outer (this script; new user/mount/net/ipc/uts/cgroup ns; host pid ns)
                 └── init (pid 1 of a new pid ns): mounts, pivot_root, drops to uid 1000,
                     drops capabilities, no_new_privs, Landlock, seccomp; preloads modules;
                     waits for one request; forks:
                         └── code (the user's program) with rlimits

Frames on the control socket are a 4-byte big-endian length and a body: ``marshal`` from the
worker (trusted, and fast to load), JSON towards the worker (which must never unmarshal what a
sandbox wrote). Imports are kept to builtin modules at start-up (no ``json``, ``re``, ``enum``):
interpreter start-up is most of the cost of a cold sandbox.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module; ``signal`` pulls in ``enum``
import binascii
import ctypes
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

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

SYS_PIVOT_ROOT = 155
SYS_CAPSET = 126
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446

INNER_UID = 1000
NEW_ROOT = "/tmp"  # any existing directory works: it is covered only inside our mount ns
DEV_NODES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]


class SetupFailed(Exception):
    """A layer the kernel refused; reported to the worker, which fails closed."""

    def __init__(self, layer: str, detail: str) -> None:
        super().__init__(f"{layer}: {detail}")
        self.layer = layer
        self.detail = detail


def _check(rc: int, layer: str, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise SetupFailed(layer, f"{what}: {os.strerror(err)} (errno {err})")
    return rc


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _libc.mount(
        src.encode() if src else None,
        dst.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    _check(rc, "mount_namespace", f"mount {src or ''} on {dst}")


def _prctl(option: int, arg: int, layer: str) -> None:
    rc = _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), 0)
    _check(rc, layer, f"prctl({option})")


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


# ---- outer: namespaces ----------------------------------------------------------------------


def _write(path: str, text: str, dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY, dir_fd=dir_fd)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def outer(sock: int) -> int:
    # If the worker (or the zygote) dies, so does the sandbox, whatever the code is doing.
    _prctl(PR_SET_PDEATHSIG, 9, "platform")
    parent = os.getppid()
    cfg = recv(sock)
    sources: dict[str, int] = {}
    try:
        _check(_libc.unshare(CLONE_NEWUSER), "user_namespace", "unshare(CLONE_NEWUSER)")
        for flag, layer in (
            (CLONE_NEWNS, "mount_namespace"),
            (CLONE_NEWPID, "pid_namespace"),
            (CLONE_NEWNET, "network_namespace"),
            (CLONE_NEWIPC, "ipc_namespace"),
            (CLONE_NEWUTS, "uts_namespace"),
            (CLONE_NEWCGROUP, "cgroup_namespace"),
        ):
            _check(_libc.unshare(flag), layer, f"unshare({layer})")
        # Bind sources are opened now: in the new mount namespace (a bind mount cannot take its
        # source from another one) but still with the worker's host ids, since once we become
        # the unprivileged host uid we could no longer walk into e.g. /root/.pyenv.
        for bind in cfg["binds"]:
            if bind["src"] not in sources:
                sources[bind["src"]] = os.open(bind["src"], os.O_PATH | os.O_CLOEXEC)
        if cfg["map_by_parent"]:
            # Only a process privileged in the *parent* namespace may map us to a uid that is
            # not our own (the unprivileged host uid); the worker does that and tells us.
            send(sock, {"event": "need_map"})
            if recv(sock).get("event") != "mapped":
                raise SetupFailed("user_namespace", "worker did not write the id maps")
            # The map alone does not change who we are: become the mapped (unprivileged) ids
            # and shed the worker's supplementary groups, which would still grant host access.
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            # Changing uid made us non-dumpable, which hands /proc/self to host root and would
            # stop us writing our inner id maps; pid 1 turns it off again once they are written.
            _prctl(PR_SET_DUMPABLE, 1, "user_namespace")
            # It also cleared the parent-death signal: arm it again, and make sure the parent
            # did not die in between.
            _prctl(PR_SET_PDEATHSIG, 9, "platform")
            if os.getppid() != parent:
                return 70
        else:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {cfg['host_uid']} 1")
            _write("/proc/self/gid_map", f"0 {cfg['host_gid']} 1")
    except SetupFailed as exc:
        send(sock, {"event": "error", "layer": exc.layer, "detail": exc.detail})
        return 70
    except OSError as exc:
        send(sock, {"event": "error", "layer": "user_namespace", "detail": str(exc)})
        return 70
    pid = os.fork()
    if pid == 0:
        try:
            return init(sock, cfg, sources)
        except SetupFailed as exc:
            send(sock, {"event": "error", "layer": exc.layer, "detail": exc.detail})
            return 70
        except OSError as exc:
            import traceback

            detail = "".join(traceback.format_exception(exc)[-3:])
            send(sock, {"event": "error", "layer": "setup", "detail": detail})
            return 70
    # The outer process only waits: it holds nothing the sandbox could use.
    os.close(sock)
    for fd in sources.values():
        os.close(fd)
    devnull = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status) & 0xFF
        except ChildProcessError:
            return 70
        except InterruptedError:
            continue


# ---- init: filesystem view, identity, capabilities, Landlock, seccomp ---------------------


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind(fd: int, dst: str, kind: str) -> None:
    target = NEW_ROOT + dst
    source = f"/proc/self/fd/{fd}"
    if os.path.isdir(source):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(source, target, None, MS_BIND | MS_REC, None)
    if kind == "dev":
        return  # device nodes keep their own (rw, dev) mount flags; Landlock narrows them
    # A remount inside a user namespace must keep the flags the source mount has locked.
    locked = os.statvfs(target).f_flag & (MS_NOEXEC | MS_NOSUID | MS_NODEV)
    _mount(
        None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked, None
    )


def _setup_filesystem(cfg: dict[str, Any], sources: dict[str, int]) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    _mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for bind in cfg["binds"]:
        _bind(sources[bind["src"]], bind["dst"], bind["kind"])
    for fd in sources.values():
        os.close(fd)
    sources.clear()
    for target, name in cfg["symlinks"]:
        os.symlink(target, NEW_ROOT + name)
    work = cfg["workdir"]
    _mkdirs(NEW_ROOT + "/work")
    _mount(
        "tmpfs",
        NEW_ROOT + "/work",
        "tmpfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        f"size={work['bytes']},nr_inodes={work['inodes']},mode=0700",
    )
    os.symlink("/work", NEW_ROOT + "/tmp")
    os.mkdir(NEW_ROOT + "/.old")
    _check(
        _libc.syscall(SYS_PIVOT_ROOT, NEW_ROOT.encode(), (NEW_ROOT + "/.old").encode()),
        "mount_namespace",
        "pivot_root",
    )
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "mount_namespace", "umount old root")
    os.rmdir("/.old")
    # The skeleton (mount points, symlinks) becomes read-only too; only /work is writable.
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _become_unprivileged(proc_self: int) -> None:
    # A second user namespace whose only uid is 1000: the code never runs as (namespace) root,
    # and the mount namespace stays owned by the outer one, so no capability here can remount.
    _check(_libc.unshare(CLONE_NEWUSER), "user_namespace", "unshare(CLONE_NEWUSER) for uid drop")
    _write("setgroups", "deny", dir_fd=proc_self)
    _write("uid_map", f"{INNER_UID} 0 1", dir_fd=proc_self)
    _write("gid_map", f"{INNER_UID} 0 1", dir_fd=proc_self)
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "capabilities")
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(
        _libc.syscall(SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)),
        "capabilities",
        "capset(0)",
    )
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    if os.getuid() != INNER_UID or os.geteuid() != INNER_UID:
        raise SetupFailed("user_namespace", f"uid is {os.getuid()}, expected {INNER_UID}")


# Landlock access rights (include/uapi/linux/landlock.h).
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1, 2, 4, 8
LL_REFER, LL_TRUNCATE, LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15


def _landlock(mode: str) -> int:
    """Applies the Landlock ruleset; returns the ABI used (0 when unavailable and optional)."""
    if mode == "off":
        return 0
    abi = int(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, 1))
    if abi < 1:
        if mode == "require":
            raise SetupFailed("landlock", f"not available: {os.strerror(ctypes.get_errno())}")
        return 0
    fs = (1 << 13) - 1
    fs |= LL_REFER if abi >= 2 else 0
    fs |= LL_TRUNCATE if abi >= 3 else 0
    fs |= LL_IOCTL_DEV if abi >= 5 else 0
    net = 3 if abi >= 4 else 0  # bind and connect TCP: no rule grants them
    scoped = 3 if abi >= 6 else 0  # abstract unix sockets and signals outside the sandbox
    attr = struct.pack("<QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _check(
        int(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), 0)),
        "landlock",
        "create_ruleset",
    )
    read = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR
    dev = (LL_READ_FILE | LL_WRITE_FILE) | (fs & (LL_TRUNCATE | LL_IOCTL_DEV))
    work = fs & ~LL_EXECUTE  # nothing written by the code is executed as a program
    for path, access in [("/", read), ("/work", work)] + [(f"/dev/{n}", dev) for n in DEV_NODES]:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = ctypes.create_string_buffer(struct.pack("<Qi", access, fd), 12)
        rc = int(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, 1, rule, 0))
        os.close(fd)
        _check(rc, "landlock", f"add_rule {path}")
    _check(int(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)), "landlock", "restrict_self")
    os.close(ruleset)
    return abi


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    rc = _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0)
    _check(rc, "seccomp", "load filter")


def _import_all(names: list[str]) -> list[str]:
    done = []
    for name in names:
        try:
            __import__(name)
            done.append(name)
        except Exception:  # noqa: BLE001 - a missing optional module is not an error here
            pass
    return done


def _vm_size(proc_self: int) -> int:
    fd = os.open("status", os.O_RDONLY, dir_fd=proc_self)
    try:
        text = os.read(fd, 65536).decode()
    finally:
        os.close(fd)
    for line in text.splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def init(sock: int, cfg: dict[str, Any], sources: dict[str, int]) -> int:
    _prctl(PR_SET_PDEATHSIG, 9, "pid_namespace")  # SIGKILL
    if os.getpid() != 1:
        raise SetupFailed("pid_namespace", f"expected pid 1, got {os.getpid()}")
    # As pid 1 we receive from inside the namespace only signals we handle: none, so the code
    # can neither kill nor stop its supervisor.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    proc_self = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    _setup_filesystem(cfg, sources)
    _check(_libc.sethostname(b"sandbox", 7), "uts_namespace", "sethostname")
    _become_unprivileged(proc_self)
    os.chdir("/work")
    sys.path[:] = [p for p in sys.path if p] + list(cfg["site_dirs"])
    os.environ.clear()
    os.environ.update(cfg["env"])
    # Preloading runs trusted, host-installed modules, already without privileges or host
    # files; it comes before Landlock and seccomp only so we can measure the warm interpreter.
    preloaded = _import_all(cfg["preload"])
    baseline = _vm_size(proc_self)
    os.close(proc_self)
    _prctl(PR_SET_DUMPABLE, 0, "no_new_privs")  # keeps /proc/1 and ptrace away from the code
    abi = _landlock(str(cfg["landlock"]))
    _seccomp(cfg["seccomp"])
    send(sock, {"event": "ready", "landlock_abi": abi, "preloaded": preloaded})
    request = recv(sock)
    return serve(sock, request, baseline)


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


# ---- zygote ---------------------------------------------------------------------------------


def zygote(zsock: int) -> int:
    """Forks outer processes on request, so a sandbox costs a fork, not an interpreter start.

    The zygote is itself a freshly executed interpreter with an empty environment: it never
    held any of the worker's memory, and it never runs code it was sent. Its ``sys.path`` is
    the standard library only (``-S``), so no third-party module ever runs unisolated here.
    Each request carries three descriptors (control socket, stdout, stderr); the answer is the
    new outer's pid.
    """
    import socket  # SCM_RIGHTS; the zygote's start-up is paid once

    _prctl(PR_SET_PDEATHSIG, 9, "platform")  # the worker's death ends the zygote
    # Children are reaped by the kernel: the worker watches each outer through a pidfd.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    conn = socket.socket(fileno=zsock)
    cfg = recv(zsock)
    os.environ.update(cfg["env"])
    _import_all(cfg["preload"])
    send(zsock, {"event": "ready"})
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(conn, 16, 3)
        except OSError:
            return 0
        if len(fds) != 3:
            return 0  # the worker closed its end
        ctl, out, err = fds
        pid = os.fork()
        if pid == 0:
            conn.close()
            os._exit(_zygote_child(ctl, out, err))
        for fd in fds:
            os.close(fd)
        conn.sendall(struct.pack(">I", pid))


def _zygote_child(ctl: int, out: int, err: int) -> int:
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)  # we wait for our own children
    _prctl(PR_SET_PDEATHSIG, 9, "platform")
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for src, dst in ((null, 0), (out, 1), (err, 2), (ctl, 3)):
        os.dup2(src, dst)
    # Nothing the zygote had open (or a preloaded module left open) reaches the sandbox.
    os.closerange(4, 1 << 20)
    # Forks share the zygote's memory. ``random`` reseeds itself after a fork; third-party
    # modules (numpy's generator does not reseed) never load here: the zygote's sys.path is the
    # standard library only, so they are preloaded by each pooled sandbox, after isolation.
    try:
        return outer(3)
    except EOFError:
        return 70


def main() -> int:
    if sys.argv[1] == "--zygote":
        return zygote(int(sys.argv[2]))
    sock = int(sys.argv[1])
    try:
        return outer(sock)
    except EOFError:
        return 70


if __name__ == "__main__":
    sys.exit(main())
