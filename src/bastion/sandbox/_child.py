"""The sandbox's own side: isolates a fresh interpreter (or a fork of the zygote) and warms it.

Owns: namespaces, the filesystem view, identity, capabilities, Landlock, loading the seccomp
filter, and the zygote. Does not own: running the code and reporting (``_child_run.py``), nor
limits policy, pooling or anything about the worker (``_local.py``, ``_spawn.py``).

This file is run as a *script* by a freshly executed interpreter (``python -I -S -B _child.py
FD``, or ``--zygote FD``), never imported by the worker: the sandbox shares no memory with the
worker's process. It may therefore import only the standard library, and everything it needs
from ``ctypes`` is declared here, in one place.

Process tree (host view)::

    worker ── outer (this script; new user/mount/net/ipc/uts/cgroup ns; host pid ns)
                 └── init (pid 1 of a new pid ns): mounts, pivot_root, drops to uid 1000,
                     drops capabilities, no_new_privs, Landlock, seccomp; preloads modules;
                     waits for one request; forks:
                         └── code (the user's program) with rlimits

Imports are kept to builtin modules at start-up (no ``json``, ``re``, ``enum``): interpreter
start-up is most of the cost of a cold sandbox.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # C module; ``signal`` pulls in ``enum``
import ctypes
import os
import struct
import sys

# The sibling module is imported now, from the host's copy of this package, before the sandbox
# hides the host's files; the path entry is removed again so the code never sees it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _child_run import recv, send, serve  # type: ignore[import-not-found]

del sys.path[0]

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
    status: int = serve(sock, request, baseline)
    return status


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
