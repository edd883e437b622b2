"""``Suspend``: the signal that a run must wait for a human. Owns nothing else."""

from __future__ import annotations

from bastion.core.records import WaitReason


class Suspend(Exception):
    """The run must wait for a human at ``step_no`` for ``reason``."""

    def __init__(self, reason: WaitReason, step_no: int, detail: str = "") -> None:
        super().__init__(f"{reason.value} at step {step_no}: {detail}")
        self.reason = reason
        self.step_no = step_no
        self.detail = detail
