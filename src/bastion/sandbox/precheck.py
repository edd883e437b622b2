"""Static pre-check of code before it runs: imports and calls a policy flags or blocks.

Owns: parsing the code (``ast``), resolving import aliases, the default rules, and
``GuardedSandbox``, which puts the check in front of any ``Sandbox``. Does not own isolation:
this is defence in depth and an early, readable refusal for the model. A determined program can
hide an import from any static check (``getattr`` on strings, data it decodes), which is why the
boundary is the sandbox and why the escape tests run with this check off.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bastion.sandbox._types import ExecResult, Finding, Limits, Sandbox

BLOCKED_IMPORTS: frozenset[str] = frozenset(
    {
        "ctypes",
        "cffi",
        "subprocess",
        "socket",
        "ssl",
        "pty",
        "multiprocessing",
        "http.client",
        "urllib.request",
        "ftplib",
        "smtplib",
        "telnetlib",
        "requests",
        "httpx",
        "urllib3",
        "aiohttp",
        "paramiko",
    }
)
BLOCKED_CALLS: frozenset[str] = frozenset(
    {
        "os.system",
        "os.popen",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "os.setuid",
        "os.setgid",
        "os.chroot",
        "os.execv",
        "os.execve",
        "os.execl",
        "os.execle",
        "os.execlp",
        "os.execlpe",
        "os.execvp",
        "os.execvpe",
        "os.spawnl",
        "os.spawnle",
        "os.spawnv",
        "os.spawnve",
        "os.posix_spawn",
        "os.posix_spawnp",
        "importlib.import_module",
        "builtins.eval",
        "builtins.exec",
        "builtins.compile",
        "builtins.__import__",
    }
)
# Attributes used by the classic "escape the restricted interpreter" gadget chains.
BLOCKED_DUNDERS: frozenset[str] = frozenset(
    {"__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__", "__mro__"}
)


@dataclass(kw_only=True, frozen=True)
class PrecheckPolicy:
    """``block``: refuse code with a blocking finding; ``warn``: report, run anyway."""

    mode: Literal["block", "warn", "off"] = "block"
    blocked_imports: frozenset[str] = BLOCKED_IMPORTS
    blocked_calls: frozenset[str] = BLOCKED_CALLS
    blocked_dunders: frozenset[str] = BLOCKED_DUNDERS
    allowed_imports: frozenset[str] = field(default_factory=frozenset)


def _module_blocked(name: str, policy: PrecheckPolicy) -> bool:
    if name in policy.allowed_imports:
        return False
    parts = name.split(".")
    return any(".".join(parts[:i]) in policy.blocked_imports for i in range(1, len(parts) + 1))


class _Visitor(ast.NodeVisitor):
    def __init__(self, policy: PrecheckPolicy) -> None:
        self.policy = policy
        self.findings: list[Finding] = []
        # Local name -> the dotted name it stands for (``import os as o``; ``from os import
        # system``); builtins resolve to ``builtins.<name>`` unless rebound.
        self.aliases: dict[str, str] = {}

    def _add(self, node: ast.AST, rule: str, message: str) -> None:
        self.findings.append(
            Finding(
                rule=rule,
                message=message,
                line=getattr(node, "lineno", 0),
                col=getattr(node, "col_offset", 0),
                blocking=True,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _module_blocked(alias.name, self.policy):
                self._add(node, "import-blocked", f"import of '{alias.name}' is not allowed")
            local = alias.asname or alias.name.split(".")[0]
            self.aliases[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        module_blocked = node.level == 0 and _module_blocked(module, self.policy)
        if module_blocked:
            self._add(node, "import-blocked", f"import from '{module}' is not allowed")
        for alias in node.names:
            full = f"{module}.{alias.name}" if module else alias.name
            if node.level == 0 and not module_blocked and _module_blocked(full, self.policy):
                self._add(node, "import-blocked", f"import of '{full}' is not allowed")
            self.aliases[alias.asname or alias.name] = full
        self.generic_visit(node)

    def _dotted(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return f"builtins.{node.id}"
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self._dotted(node.func)
        if name in self.policy.blocked_calls:
            shown = name.removeprefix("builtins.")
            rule = "dynamic-code" if name.startswith("builtins.") else "call-blocked"
            self._add(node, rule, f"call to '{shown}' is not allowed")
        if name == "builtins.getattr" and len(node.args) >= 2:
            attr = node.args[1]
            if isinstance(attr, ast.Constant) and attr.value in self.policy.blocked_dunders:
                self._add(node, "dunder-access", f"access to '{attr.value}' is not allowed")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in self.policy.blocked_dunders:
            self._add(node, "dunder-access", f"access to '{node.attr}' is not allowed")
        self.generic_visit(node)


def precheck(code: str, policy: PrecheckPolicy | None = None) -> list[Finding]:
    """The findings for ``code``, in source order. A syntax error is reported, not blocking:
    running the code then shows the interpreter's own message."""
    policy = policy or PrecheckPolicy()
    if policy.mode == "off":
        return []
    try:
        tree = ast.parse(code, filename="main.py")
    except SyntaxError as exc:
        return [Finding(rule="syntax-error", message=str(exc.msg), line=exc.lineno or 0)]
    visitor = _Visitor(policy)
    visitor.visit(tree)
    blocking = policy.mode == "block"
    found = sorted(visitor.findings, key=lambda f: (f.line, f.col))
    return [f.model_copy(update={"blocking": blocking}) for f in found]


def format_findings(findings: Sequence[Finding]) -> str:
    """One line per finding, like a linter: ``main.py:3:0: import-blocked: ...``."""
    return "".join(f"main.py:{f.line}:{f.col}: {f.rule}: {f.message}\n" for f in findings)


class GuardedSandbox:
    """A ``Sandbox`` that pre-checks code and refuses it (by policy) before the inner one runs."""

    def __init__(self, inner: Sandbox, policy: PrecheckPolicy | None = None) -> None:
        self.inner = inner
        self.policy = policy or PrecheckPolicy()

    async def execute(
        self,
        code: str,
        *,
        files: Mapping[str, bytes] | None = None,
        outputs: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> ExecResult:
        findings = precheck(code, self.policy)
        if any(f.blocking for f in findings):
            return ExecResult(
                stdout="",
                stderr="Refused by the pre-check:\n" + format_findings(findings),
                exit_status=None,
                killed_reason="precheck",
                findings=findings,
                backend="precheck",
            )
        result = await self.inner.execute(code, files=files, outputs=outputs, limits=limits)
        return result.model_copy(update={"findings": findings}) if findings else result

    async def aclose(self) -> None:
        await self.inner.aclose()
