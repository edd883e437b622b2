"""Errors raised by the guards: a failed guard and a tripped guard.

Owns the two error classes and their codes. Does not own deciding when to raise them: the pipeline
does that (``GuardTripped`` is raised only by callers that ask for it with
``GuardDecision.raise_for``).
"""

from __future__ import annotations

from typing import ClassVar

from bastion.core.errors import BastionError, ConfigError


class GuardError(BastionError):
    """A guard could not scan the text (bug, missing model, bad config); fail closed."""

    code: ClassVar[str] = "guard_error"
    http_status: ClassVar[int] = 500
    default_hint: ClassVar[str] = (
        "The text was treated as unsafe because a guard failed; check the guard configuration "
        "and installed extras (`pip install bastion[guards]`)."
    )


class GuardConfigError(ConfigError):
    """The ``guards:`` section of the configuration is invalid."""

    code: ClassVar[str] = "guard_config_invalid"
    default_hint: ClassVar[str] = "Correct the named setting under `guards:` in bastion.yaml."


class GuardTripped(BastionError):
    """A guard decided to block the text or send it to review."""

    code: ClassVar[str] = "guard_tripped"
    http_status: ClassVar[int] = 422
    default_hint: ClassVar[str] = (
        "Remove the flagged content, or ask a reviewer to approve the step if it is legitimate."
    )
