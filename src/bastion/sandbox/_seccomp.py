"""The sandbox's seccomp filter: which system calls the code may not make, compiled to BPF.

Owns: the deny list and its compilation with libseccomp (through ``ctypes``; Debian package
``libseccomp2``). The compiled program is computed once per worker and handed to each sandbox,
which loads it itself right before it preloads modules. Does not own: loading the filter (that
is ``_child.py``, inside the sandbox).

Denied calls fail with ``EPERM`` rather than killing the process, so the code sees an ordinary
``PermissionError`` and its report says what it tried.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import tempfile
from functools import cache

from bastion.sandbox._errors import SandboxUnsupported

# Everything that reaches the kernel's more dangerous surfaces, or that would let the code
# rebuild the layers we took away (mounts, namespaces, tracing another process).
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "personality",
    "uselib",
    "vhangup",
    "lookup_dcookie",
    # Memory that RLIMIT_AS does not see: SysV segments and queues outlive their process, and
    # a memfd grows by write() without ever being mapped.
    "shmget",
    "msgget",
    "semget",
    "mq_open",
    "memfd_create",
    "memfd_secret",
    "fanotify_init",
)

# Namespace flags refused on clone(); clone3 passes its flags in memory, which a filter cannot
# read, so it reports ENOSYS and the C library falls back to clone().
_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
AF_UNIX = 1

_ACT_ALLOW = 0x7FFF0000
_CMP_NE = 1
_CMP_MASKED_EQ = 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _load_libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SandboxUnsupported(
            "seccomp",
            f"libseccomp could not be loaded ({exc})",
            hint="Install it: apt-get install libseccomp2",
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str, *cmps: _ArgCmp) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return  # not a system call on this architecture (e.g. iopl elsewhere)
    arr = (_ArgCmp * max(1, len(cmps)))(*cmps)
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if rc < 0:
        raise SandboxUnsupported("seccomp", f"libseccomp refused the rule for {name}: {rc}")


@cache
def seccomp_program() -> bytes:
    """The compiled BPF program (a multiple of 8 bytes), built once per process."""
    lib = _load_libseccomp()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SandboxUnsupported("seccomp", "seccomp_init failed")
    try:
        eperm = _errno_action(errno.EPERM)
        for name in DENIED_SYSCALLS:
            _add(lib, ctx, eperm, name)
        for flag in _NAMESPACE_FLAGS:
            _add(lib, ctx, eperm, "clone", _ArgCmp(0, _CMP_MASKED_EQ, flag, flag))
        _add(lib, ctx, _errno_action(errno.ENOSYS), "clone3")
        # Only AF_UNIX sockets: no IP (even loopback), no raw, packet or netlink sockets.
        for call in ("socket", "socketpair"):
            _add(lib, ctx, eperm, call, _ArgCmp(0, _CMP_NE, AF_UNIX, 0))
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc < 0:
                raise SandboxUnsupported("seccomp", f"seccomp_export_bpf failed: {rc}")
            out.seek(0)
            program = out.read()
    finally:
        lib.seccomp_release(ctx)
    if not program or len(program) % 8:
        raise SandboxUnsupported("seccomp", f"unexpected BPF program size {len(program)}")
    return program


def seccomp_available() -> bool:
    """Whether this kernel accepts seccomp filters (``Seccomp`` field in /proc/self/status)."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as fh:
            return any(line.startswith("Seccomp:") for line in fh)
    except OSError:
        return False
