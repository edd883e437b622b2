"""The sandbox contract: ``Sandbox`` protocol, ``Limits`` in, ``ExecResult`` out.

Owns: the shapes every backend (namespaces, remote service) speaks, so that callers, the
``run_python`` tool and the CLI never depend on a backend. Does not own: how a backend isolates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

KilledReason = Literal[
    "wall_time",  # the wall-clock limit passed; the whole process tree was killed
    "cpu_time",  # RLIMIT_CPU
    "memory_limit",  # an allocation failed under the memory limit
    "process_limit",  # fork/thread creation refused by the process limit
    "output_limit",  # stdout or stderr passed max_output_bytes; killed, output truncated
    "file_size_limit",  # a write passed max_file_bytes
    "disk_limit",  # the workdir (tmpfs) is full, in bytes or in files
    "signal",  # the code died of a signal it did not get from a limit
    "sandbox_lost",  # the sandbox's supervisor vanished (reported, never retried silently)
    "precheck",  # refused before running by the static pre-check
]


class Limits(BaseModel):
    """What one execution may use. Every field has a safe default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_seconds: float = Field(10.0, gt=0, le=3600)
    cpu_seconds: int = Field(10, ge=1, le=3600)
    memory_bytes: int = Field(512 * 2**20, ge=16 * 2**20)
    processes: int = Field(16, ge=1, le=4096)
    max_output_bytes: int = Field(1 * 2**20, ge=1)
    max_file_bytes: int = Field(64 * 2**20, ge=1)
    max_files: int = Field(1024, ge=16)
    disk_bytes: int = Field(128 * 2**20, ge=2**20)
    open_files: int = Field(256, ge=16)
    output_file_bytes: int = Field(16 * 2**20, ge=0)  # total of the returned files


class ResourceUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu_user_seconds: float = 0.0
    cpu_system_seconds: float = 0.0
    max_rss_kb: int = 0


class Timing(BaseModel):
    model_config = ConfigDict(frozen=True)

    wall_seconds: float  # from handing the code over to its result
    setup_seconds: float  # getting a sandbox: ~0 when a warm one was ready
    warm: bool  # taken from the pre-isolated pool


class Finding(BaseModel):
    """One thing the static pre-check noticed, with where it is."""

    model_config = ConfigDict(frozen=True)

    rule: str  # e.g. "import-blocked", "call-blocked", "dunder-access", "dynamic-code"
    message: str
    line: int
    col: int = 0
    blocking: bool = False


class ExecResult(BaseModel):
    """What happened. A misbehaving program is a result, never an exception."""

    model_config = ConfigDict(frozen=True)

    stdout: str
    stderr: str
    exit_status: int | None  # the code's status; negative = killed by that signal; None = n/a
    killed_reason: KilledReason | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    files: dict[str, bytes] = Field(default_factory=dict)
    files_skipped: dict[str, str] = Field(default_factory=dict)  # path -> why it was not returned
    usage: ResourceUsage = Field(default_factory=ResourceUsage)
    timing: Timing | None = None
    findings: list[Finding] = Field(default_factory=list)  # from the pre-check, when enabled
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.killed_reason is None


@runtime_checkable
class Sandbox(Protocol):
    """Runs untrusted Python once per call, isolated, within limits."""

    async def execute(
        self,
        code: str,
        *,
        files: Mapping[str, bytes] | None = None,
        outputs: Sequence[str] = (),
        limits: Limits | None = None,
    ) -> ExecResult:
        """Runs ``code`` as ``main.py`` in a fresh workdir holding ``files``.

        ``outputs`` are glob patterns (relative to the workdir) of files to bring back.
        """
        ...

    async def aclose(self) -> None: ...


def check_output_pattern(pattern: str) -> str:
    """Refuses output globs that would reach outside the workdir."""
    from bastion.core.errors import UserError

    if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
        raise UserError(
            f"Invalid sandbox output pattern {pattern!r}",
            hint="Use a glob relative to the working directory, e.g. 'out/*.csv'.",
        )
    return pattern


def check_input_name(name: str) -> str:
    """Refuses input file names that would land outside the workdir."""
    from bastion.core.errors import UserError

    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UserError(f"Invalid sandbox input file name {name!r}", hint="Use a relative path.")
    return name
