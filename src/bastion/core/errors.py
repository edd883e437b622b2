"""Bastion's error tree: every refusal is one of these, with a stable code and a hint.

Owns: the exception classes, their codes, and their serialised form (for the journal, the HTTP
API as RFC 9457 problem+json, and the review UI). Does not own: deciding when to raise them.

Tree (grouped by who must act)::

    BastionError                      code              who acts
    ├── UserError                     user_error        the caller: fix the request or config
    │   ├── ConfigError               config_invalid
    │   ├── NotFound                  not_found
    │   │   ├── RunNotFound           run_not_found
    │   │   ├── AgentNotFound         agent_not_found
    │   │   └── ToolNotFound          tool_not_found
    │   ├── InvalidState              invalid_state     (e.g. deciding a run that is not waiting)
    │   │   └── SealedDataDestroyed   sealed_data_destroyed (a run's sealed values are gone)
    │   └── ToolDefinitionError       tool_definition_invalid
    ├── StoreError                    store_error       the operator: the database
    │   ├── StoreUnavailable          store_unavailable
    │   ├── ConcurrentUpdate          concurrent_update (optimistic lock lost; reload and retry)
    │   ├── LeaseLost                 lease_lost        (another worker owns the run now)
    │   ├── SchemaVersionError        schema_version    (database newer than this code)
    │   └── CorruptRecord             corrupt_record    (a stored run cannot be read back)
    ├── RunError                      run_error         the run failed; carries run_id, step_no
    │   ├── ToolFailed                tool_failed
    │   ├── ToolTimeout               tool_timeout
    │   ├── ToolContractViolation     tool_contract_violation
    │   ├── InvalidModelOutput        invalid_model_output
    │   │   └── ToolArgumentsInvalid  tool_arguments_invalid
    │   ├── PreconditionFailed        tool_precondition_failed
    │   ├── MaxTurnsExceeded          max_turns_exceeded
    │   ├── RunTimeout                run_timeout
    │   ├── BudgetExceeded            budget_exceeded
    │   ├── PolicyDenied              policy_denied
    │   ├── OutputValidationFailed    output_validation_failed
    │   ├── OutcomeUnknown            outcome_unknown
    │   ├── NondeterminismError       nondeterminism
    │   └── SpecChanged               spec_changed      (the agent's code changed under the run)
    ├── ProviderError                 provider_error    the provider (``retryable``: retry may help)
    │   ├── ProviderRateLimited       provider_rate_limited (carries retry_after)
    │   ├── ProviderUnavailable       provider_unavailable  (5xx, connection, timeout)
    │   ├── ProviderResponseInvalid   provider_response_invalid (malformed body)
    │   ├── ProviderAuthError         provider_auth     (401/403: fix the key)
    │   ├── ProviderRequestRejected   provider_request_rejected (other 4xx)
    │   └── CircuitOpen               circuit_open
    └── SandboxError                  sandbox_error     the operator: isolation is missing or broken

``RunCancelled`` derives from ``BaseException`` on purpose: it is the kill/cancel signal and user
code (tools) must not swallow it with ``except Exception``.
"""

from __future__ import annotations

from typing import Any, ClassVar

JsonDict = dict[str, Any]


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    code: ClassVar[str] = "bastion_error"
    http_status: ClassVar[int] = 500
    default_hint: ClassVar[str] = ""
    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details: JsonDict = {k: v for k, v in details.items() if v is not None}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> JsonDict:
        """The serialised form written to the journal and returned by the API."""
        return {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
            "details": self.details,
        }

    def to_problem(self, instance: str | None = None) -> JsonDict:
        """RFC 9457 problem+json body."""
        body: JsonDict = {
            "type": f"https://bastion.dev/errors/{self.code}",
            "title": type(self).__name__,
            "status": self.http_status,
            "detail": self.message,
            "code": self.code,
            "hint": self.hint,
        }
        if instance:
            body["instance"] = instance
        body.update({k: v for k, v in self.details.items() if k not in body})
        return body


# ---- user ---------------------------------------------------------------------------------------


class UserError(BastionError):
    code = "user_error"
    http_status = 400
    default_hint = "Fix the request or the configuration and try again."


class ConfigError(UserError):
    code = "config_invalid"
    default_hint = "Correct the named setting in bastion.yaml or the environment."


class NotFound(UserError):
    code = "not_found"
    http_status = 404


class RunNotFound(NotFound):
    code = "run_not_found"
    default_hint = "Check the run id with `bastion runs list`."


class AgentNotFound(NotFound):
    code = "agent_not_found"
    default_hint = "Register the agent with Bastion(agents=[...]) or declare it in bastion.yaml."


class ToolNotFound(NotFound):
    code = "tool_not_found"
    default_hint = "Register the tool in the ToolRegistry and list it in the agent's tools."


class InvalidState(UserError):
    code = "invalid_state"
    http_status = 409


class SealedDataDestroyed(InvalidState):
    code = "sealed_data_destroyed"
    default_hint = (
        "The run's personal data was sealed and its key destroyed when its retention ended; "
        "what is left shows placeholders only."
    )


class ToolDefinitionError(UserError):
    code = "tool_definition_invalid"
    default_hint = "Give every tool parameter and the return value a type hint."


# ---- store --------------------------------------------------------------------------------------


class StoreError(BastionError):
    code = "store_error"
    http_status = 503
    default_hint = "Check that the database named by the store URL is reachable."


class StoreUnavailable(StoreError):
    code = "store_unavailable"
    retryable = True


class ConcurrentUpdate(StoreError):
    code = "concurrent_update"
    http_status = 409
    default_hint = "Another writer changed this run first; reload it and retry the change."
    retryable = True


class LeaseLost(StoreError):
    code = "lease_lost"
    http_status = 409
    default_hint = "Another worker now owns this run; this worker stops touching it."


class CorruptRecord(StoreError):
    """A stored run row could not be decoded (edited by hand, or written by a broken build).
    Carries ``run_id`` so the worker can move that run aside and go on with the others."""

    code = "corrupt_record"
    default_hint = (
        "The run was moved to dead letters with this error; repair or delete its row, then "
        "replay it."
    )

    def __init__(self, message: str, *, run_id: str | None = None, **details: Any) -> None:
        super().__init__(message, run_id=run_id, **details)
        self.run_id = run_id


class SchemaVersionError(StoreError):
    code = "schema_version"
    default_hint = "Upgrade Bastion, or run `bastion db upgrade` with the newer version."


# ---- run ----------------------------------------------------------------------------------------


class RunError(BastionError):
    """The run (or one of its steps) failed. Carries the run and step it belongs to."""

    code = "run_error"
    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        run_id: str | None = None,
        step_no: int | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, hint=hint, run_id=run_id, step_no=step_no, **details)
        self.run_id = run_id
        self.step_no = step_no


class ToolFailed(RunError):
    code = "tool_failed"
    default_hint = "Inspect the run's error, fix the cause, then replay it from the failed step."


class ToolTimeout(ToolFailed):
    code = "tool_timeout"
    retryable = True
    default_hint = "Raise the tool's timeout or make it faster; the step was retried as configured."


class ToolContractViolation(ToolFailed):
    code = "tool_contract_violation"
    default_hint = "The tool returned data that does not match its declared output; fix the tool."


class InvalidModelOutput(RunError):
    code = "invalid_model_output"
    default_hint = "The model's reply could not be used; it was told the error and asked to retry."


class ToolArgumentsInvalid(InvalidModelOutput):
    code = "tool_arguments_invalid"
    default_hint = "The model's tool arguments did not match the tool's schema; it was told why."


class PreconditionFailed(RunError):
    code = "tool_precondition_failed"
    default_hint = "The call was refused before it ran; the model was told which condition failed."


class MaxTurnsExceeded(RunError):
    code = "max_turns_exceeded"
    default_hint = "Raise the agent's max_turns or simplify the task."


class RunTimeout(RunError):
    code = "run_timeout"
    default_hint = "Raise the agent's max_wall_seconds or simplify the task."


class BudgetExceeded(RunError):
    code = "budget_exceeded"
    default_hint = "Raise the budget for this agent or tenant, or shorten the task."


class PolicyDenied(RunError):
    code = "policy_denied"
    http_status = 403
    default_hint = "Ask an administrator to change the policy if this action should be allowed."


class OutputValidationFailed(RunError):
    code = "output_validation_failed"
    default_hint = "The final answer did not satisfy the agent's output contract."


class OutcomeUnknown(RunError):
    code = "outcome_unknown"
    default_hint = (
        "A non-idempotent step started but its result was never recorded. Check the outside "
        "system, then approve (run it again), resolve (give the result) or reject it."
    )


class NondeterminismError(RunError):
    code = "nondeterminism"
    default_hint = (
        "The agent's code or definition changed while this run was in flight. Restore the old "
        "definition, or replay the run from the first diverging step."
    )


class SpecChanged(RunError):
    code = "spec_changed"
    default_hint = (
        "The run keeps the definition it started with. Deploy the agent version it was started "
        "against, or move the run to the current definition with `bastion runs migrate RUN_ID`."
    )


# ---- provider -----------------------------------------------------------------------------------


class ProviderError(BastionError):
    code = "provider_error"
    http_status = 502
    default_hint = "The model provider failed; Bastion retries and falls back where configured."

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        provider: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, hint=hint, provider=provider, status=status, **details)
        self.provider = provider
        self.status = status
        if retryable is not None:
            self.retryable = retryable


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
    retryable = True
    default_hint = "The provider asked us to slow down; the call is retried after Retry-After."

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    code = "provider_unavailable"
    retryable = True


class ProviderResponseInvalid(ProviderError):
    code = "provider_response_invalid"
    retryable = True
    default_hint = "The provider sent a body that does not follow its API; retried, then fell back."


class ProviderAuthError(ProviderError):
    code = "provider_auth"
    default_hint = "Check the provider's API key setting."


class ProviderRequestRejected(ProviderError):
    code = "provider_request_rejected"
    default_hint = (
        "The provider refused the request as malformed; check the model name and options."
    )


class CircuitOpen(ProviderError):
    code = "circuit_open"
    retryable = True
    default_hint = "The provider failed repeatedly and is paused; a fallback is used if configured."


# ---- sandbox ------------------------------------------------------------------------------------


class SandboxError(BastionError):
    code = "sandbox_error"
    default_hint = "Run `bastion sandbox check` to see which isolation layers this host lacks."


# ---- signals ------------------------------------------------------------------------------------


class RunCancelled(BaseException):
    """Raised inside a run when it is cancelled or killed. Never catch it in tool code."""

    code = "cancelled"

    def __init__(self, reason: str = "cancelled") -> None:
        super().__init__(reason)
        self.reason = reason


_BY_CODE: dict[str, type[BastionError]] = {}


def _index(cls: type[BastionError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _index(sub)


_index(BastionError)


def error_class_for(code: str) -> type[BastionError]:
    """The error class registered under ``code`` (``BastionError`` if unknown)."""
    return _BY_CODE.get(code, BastionError)
