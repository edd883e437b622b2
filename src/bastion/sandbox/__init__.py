"""Isolated execution of model-generated Python: the ``Sandbox`` protocol and its backends.

Owns: the public surface of the sandbox subsystem. ``NamespaceSandbox`` (Linux namespaces,
seccomp, Landlock, a warm pool) is the default backend; ``RemoteSandbox`` speaks HTTP to a
sandbox service (VM-grade isolation); ``GuardedSandbox`` adds the static pre-check in front of
either. See docs/sandbox.md.
"""

from __future__ import annotations

from bastion.sandbox._errors import RemoteSandboxError, SandboxCrashed, SandboxUnsupported
from bastion.sandbox._local import NamespaceOptions, NamespaceSandbox
from bastion.sandbox._types import ExecResult, KilledReason, Limits, ResourceUsage, Sandbox, Timing

__all__ = [
    "ExecResult",
    "KilledReason",
    "Limits",
    "NamespaceOptions",
    "NamespaceSandbox",
    "RemoteSandboxError",
    "ResourceUsage",
    "Sandbox",
    "SandboxCrashed",
    "SandboxUnsupported",
    "Timing",
]
