"""Which isolation layers this host supports: the facts behind ``bastion sandbox check``.

Owns: reading the kernel's switches (sysctls, seccomp, Landlock ABI) and a live probe that
builds a real sandbox and looks at it from inside. Does not own building sandboxes.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from dataclasses import dataclass
from typing import Literal

from bastion.core.errors import SandboxError
from bastion.sandbox._errors import LAYER_HINTS
from bastion.sandbox._local import NamespaceOptions, NamespaceSandbox
from bastion.sandbox._seccomp import seccomp_available, seccomp_program

Status = Literal["ok", "missing", "optional"]

_PROBE = """
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    inet = "allowed"
except OSError as e:
    inet = e.strerror
print(json.dumps({
    "uid": os.getuid(), "pid": os.getpid(), "hostname": socket.gethostname(),
    "root": sorted(os.listdir("/")), "inet": inet,
    "no_new_privs": libc.prctl(39, 0, 0, 0, 0), "seccomp": libc.prctl(21, 0, 0, 0, 0),
    "unshare": libc.unshare(0x10000000),
}))
"""


@dataclass(kw_only=True, frozen=True)
class Layer:
    name: str
    status: Status
    detail: str
    hint: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return max(0, int(libc.syscall(444, None, 0, 1)))


def static_layers() -> list[Layer]:
    """What the kernel says without starting anything."""
    layers: list[Layer] = []
    machine = os.uname().machine
    ok_platform = sys.platform.startswith("linux") and machine == "x86_64"
    layers.append(
        Layer(
            name="platform",
            status="ok" if ok_platform else "missing",
            detail=f"{sys.platform} {machine} kernel {os.uname().release}",
            hint="" if ok_platform else LAYER_HINTS["platform"],
        )
    )
    max_ns = _read("/proc/sys/user/max_user_namespaces")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    userns_ok = max_ns not in (None, "0") and clone in (None, "1") and apparmor in (None, "0")
    layers.append(
        Layer(
            name="user_namespace",
            status="ok" if userns_ok or os.geteuid() == 0 else "missing",
            detail=f"max_user_namespaces={max_ns} unprivileged_userns_clone={clone} "
            f"apparmor_restrict_unprivileged_userns={apparmor}",
            hint="" if userns_ok else LAYER_HINTS["user_namespace"],
        )
    )
    try:
        program = seccomp_program()
        sec_ok, sec_detail = (
            seccomp_available(),
            f"libseccomp filter, {len(program) // 8} BPF insns",
        )
    except SandboxError as exc:
        sec_ok, sec_detail = False, exc.message
    layers.append(
        Layer(
            name="seccomp",
            status="ok" if sec_ok else "missing",
            detail=sec_detail,
            hint="" if sec_ok else LAYER_HINTS["seccomp"],
        )
    )
    abi = landlock_abi()
    layers.append(
        Layer(
            name="landlock",
            status="ok" if abi else "optional",
            detail=f"ABI {abi}" if abi else "not available (optional; used when present)",
            hint="" if abi else LAYER_HINTS["landlock"],
        )
    )
    root = os.geteuid() == 0
    layers.append(
        Layer(
            name="identity",
            status="ok",
            detail="worker is root: sandboxes run as host uid 65534, uid 1000 inside"
            if root
            else f"sandboxes run as the worker's uid {os.getuid()}, uid 1000 inside",
        )
    )
    return layers


async def live_layers(options: NamespaceOptions | None = None) -> list[Layer]:
    """Builds one real sandbox and checks, from inside, that each layer is in place."""
    opts = options or NamespaceOptions(pool_size=0)
    sandbox = NamespaceSandbox(opts)
    try:
        await sandbox.start()
        result = await sandbox.execute(_PROBE)
    except SandboxError as exc:
        layer = str(exc.details.get("layer", "sandbox"))
        return [Layer(name=layer, status="missing", detail=exc.message, hint=exc.hint)]
    finally:
        await sandbox.aclose()
    if not result.ok:
        return [Layer(name="probe", status="missing", detail=result.stderr[-500:])]
    seen = json.loads(result.stdout)
    checks = [
        ("pid_namespace", seen["pid"] < 10, f"pid inside = {seen['pid']}"),
        ("uts_namespace", seen["hostname"] == "sandbox", f"hostname = {seen['hostname']}"),
        ("mount_namespace", "etc" not in seen["root"], f"/ = {' '.join(seen['root'])}"),
        ("unprivileged_uid", seen["uid"] == 1000, f"uid inside = {seen['uid']}"),
        (
            "no_new_privs",
            seen["no_new_privs"] == 1,
            f"PR_GET_NO_NEW_PRIVS = {seen['no_new_privs']}",
        ),
        ("seccomp_applied", seen["seccomp"] == 2, f"PR_GET_SECCOMP = {seen['seccomp']}"),
        ("network_denied", seen["inet"] != "allowed", f"AF_INET socket: {seen['inet']}"),
        ("namespaces_locked", seen["unshare"] != 0, "unshare(CLONE_NEWUSER) refused"),
    ]
    layers = [Layer(name=n, status="ok" if ok else "missing", detail=d) for n, ok, d in checks]
    abi = sandbox.landlock_abi
    layers.append(
        Layer(
            name="landlock_applied",
            status="ok" if abi else "optional",
            detail=f"ruleset applied with ABI {abi}" if abi else "not applied (kernel lacks it)",
        )
    )
    return layers
