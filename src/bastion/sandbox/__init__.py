"""Isolated execution of model-generated Python: the ``Sandbox`` protocol and its backends.

Owns: the public surface of the sandbox subsystem. ``NamespaceSandbox`` (Linux namespaces,
seccomp, Landlock, a warm pool) is the default backend; ``RemoteSandbox`` speaks HTTP to a
sandbox service (VM-grade isolation); ``GuardedSandbox`` adds the static pre-check in front of
either; ``SandboxService`` serves the remote API from an isolated host; ``run_python_tool``
declares the agent tool. See docs/sandbox.md.
"""

from __future__ import annotations

from bastion.sandbox._errors import RemoteSandboxError, SandboxCrashed, SandboxUnsupported
from bastion.sandbox._local import DEFAULT_PRELOAD, NamespaceOptions, NamespaceSandbox
from bastion.sandbox._types import (
    ExecResult,
    Finding,
    KilledReason,
    Limits,
    ResourceUsage,
    Sandbox,
    Timing,
)
from bastion.sandbox.precheck import GuardedSandbox, PrecheckPolicy, precheck
from bastion.sandbox.remote import RemoteSandbox
from bastion.sandbox.service import SandboxService
from bastion.sandbox.tool import RunPythonResult, run_python_tool

__all__ = [
    "DEFAULT_PRELOAD",
    "ExecResult",
    "Finding",
    "GuardedSandbox",
    "KilledReason",
    "Limits",
    "NamespaceOptions",
    "NamespaceSandbox",
    "PrecheckPolicy",
    "RemoteSandbox",
    "RemoteSandboxError",
    "ResourceUsage",
    "RunPythonResult",
    "Sandbox",
    "SandboxCrashed",
    "SandboxService",
    "SandboxUnsupported",
    "Timing",
    "precheck",
    "run_python_tool",
]
