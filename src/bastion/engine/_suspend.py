"""The signals that stop an execution without failing the run: ``Suspend`` (a person must
decide) and ``Defer`` (the run continues later, off any worker). Owns nothing else."""

from __future__ import annotations

from bastion.core.errors import BastionError
from bastion.core.records import WaitReason


class Suspend(Exception):
    """The run must wait for a human at ``step_no`` for ``reason``. ``error``: the typed error
    the run shows while it waits (e.g. ``OutcomeUnknown`` with the failure behind it)."""

    def __init__(
        self,
        reason: WaitReason,
        step_no: int,
        detail: str = "",
        *,
        error: BastionError | None = None,
    ) -> None:
        super().__init__(f"{reason.value} at step {step_no}: {detail}")
        self.reason = reason
        self.step_no = step_no
        self.detail = detail
        self.error = error

    def to_error(self) -> dict[str, object]:
        if self.error is not None:
            return self.error.to_dict()
        return {"code": self.reason.value, "message": self.detail}


class Defer(Exception):
    """The run goes back to the queue, claimable again at ``until`` (epoch seconds): a long
    retry delay does not hold a worker."""

    def __init__(self, until: float, detail: str = "") -> None:
        super().__init__(detail)
        self.until = until
        self.detail = detail
