"""The sandbox's errors, all under ``bastion.core.errors.SandboxError``.

Owns: the codes an operator sees when isolation cannot be provided. Code that misbehaves inside
a sandbox is *not* an error: it is an ``ExecResult`` with a ``killed_reason``.

Tree::

    SandboxError                 sandbox_error
    ├── SandboxUnsupported       sandbox_unsupported   a layer the kernel or host refuses
    ├── SandboxCrashed           sandbox_crashed       the sandbox died outside the code's control
    └── RemoteSandboxError       sandbox_remote        the remote sandbox service failed
"""

from __future__ import annotations

from typing import ClassVar

from bastion.core.errors import SandboxError

# How to enable each layer, shown to the operator with the refusal.
LAYER_HINTS: dict[str, str] = {
    "user_namespace": (
        "Enable unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1 "
        "(Debian), user.max_user_namespaces=15000, and on Ubuntu 24.04+ "
        "kernel.apparmor_restrict_unprivileged_userns=0; inside a container, run it with "
        "--security-opt seccomp=unconfined or grant it CLONE_NEWUSER."
    ),
    "mount_namespace": (
        "The kernel refused a mount inside the sandbox's namespace; a container runtime may be "
        "masking /proc or forbidding mounts. Run the worker on the host or a VM."
    ),
    "pid_namespace": "Enable CONFIG_PID_NS in the kernel.",
    "network_namespace": "Enable CONFIG_NET_NS in the kernel.",
    "ipc_namespace": "Enable CONFIG_IPC_NS in the kernel.",
    "uts_namespace": "Enable CONFIG_UTS_NS in the kernel.",
    "cgroup_namespace": "Enable CONFIG_CGROUPS in the kernel.",
    "seccomp": "Install libseccomp (apt-get install libseccomp2) and use a kernel with seccomp.",
    "landlock": (
        "Boot with Landlock enabled (lsm=landlock,... on the kernel command line, Linux 5.13+), "
        "or set landlock='best_effort'."
    ),
    "capabilities": "The kernel refused to drop capabilities; this should not happen.",
    "no_new_privs": "The kernel refused PR_SET_NO_NEW_PRIVS; Linux 3.5+ is required.",
    "platform": "The namespace sandbox needs Linux on x86-64; use the remote sandbox instead.",
}


class SandboxUnsupported(SandboxError):
    """An isolation layer is missing: Bastion refuses to run the code without it."""

    code: ClassVar[str] = "sandbox_unsupported"

    def __init__(self, layer: str, detail: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"Sandbox isolation layer '{layer}' is not available: {detail}",
            hint=hint or LAYER_HINTS.get(layer),
            layer=layer,
        )
        self.layer = layer


class SandboxCrashed(SandboxError):
    """The sandbox process failed before or after the code ran (not because of the code)."""

    code: ClassVar[str] = "sandbox_crashed"


class RemoteSandboxError(SandboxError):
    """The remote sandbox service refused the request or could not be reached."""

    code: ClassVar[str] = "sandbox_remote"
    default_hint: ClassVar[str] = (
        "Check the sandbox service URL and key, and that the service is up."
    )

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message, status=status)
        self.status = status
        self.retryable = retryable
