"""The model router: resolves a target (route name or ``provider:model``) to providers, and
carries each call through retries, circuit breakers, rate limits and fallbacks.

Owns: the order candidates are tried in, how often and how long apart. Per candidate: skip it if
its provider's breaker is open; wait for its rate limit; call; on a retryable ``ProviderError``
retry with exponential backoff and jitter (never sooner than ``Retry-After``); on a non-retryable
one (auth, rejected request) move on at once. The last error is raised when every candidate fails.
Does not own: any wire format, or budgets (the engine decides whether a call may happen at all).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bastion.core.errors import CircuitOpen, ConfigError, ProviderError, ProviderRateLimited
from bastion.core.messages import ModelRequest, ModelResponse
from bastion.core.retry import RetryPolicy
from bastion.models._base import ModelProvider, ModelRef, parse_model_ref
from bastion.models._limits import (
    BreakerPolicy,
    CircuitBreaker,
    Clock,
    RateLimit,
    Sleep,
    TokenBucket,
)

DEFAULT_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.5, max_delay=20.0)

AttemptOutcome = Literal["ok", "retry", "failed", "skipped"]


@dataclass(kw_only=True, frozen=True)
class Attempt:
    """What happened to one try of one candidate, for metrics and traces (``on_attempt``).

    ``retry``: failed, will be tried again after ``wait`` seconds; ``failed``: this candidate is
    given up (the next one, if any, is tried); ``skipped``: its circuit was open, no call made.
    """

    target: str
    model: str  # "provider:model"
    attempt: int
    outcome: AttemptOutcome
    error_code: str | None = None
    wait: float | None = None


def estimate_tokens(request: ModelRequest) -> int:
    """A cheap upper-ish estimate of a request's tokens (about four characters per token) for
    tokens-per-minute limits. Exact counts are the provider's business and arrive in ``Usage``."""
    chars = sum(len(m.content or "") for m in request.messages)
    chars += sum(len(str(c.arguments)) for m in request.messages for c in m.tool_calls)
    chars += sum(len(t.description) + len(str(t.parameters)) for t in request.tools)
    return chars // 4 + 1 + (request.max_tokens or 0)


class ModelRouter:
    """Routes ``complete(target, request)`` to providers.

    ``routes`` maps a route name to an ordered list of ``"provider:model"`` candidates; a target
    that is not a route name is itself a ``"provider:model"``. ``retry`` governs attempts per
    candidate; ``breaker`` the per-provider circuit breakers; ``rate_limits`` the per-provider
    token buckets. A ``Retry-After`` longer than ``max_retry_wait`` seconds is not waited for: the
    router falls back to the next candidate instead. ``on_attempt`` is told about every try
    (retries and fallbacks are worth a metric). ``sleep``, ``clock`` and ``rng`` are injectable
    for tests.
    """

    def __init__(
        self,
        providers: Mapping[str, ModelProvider],
        *,
        routes: Mapping[str, Sequence[str]] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        breaker: BreakerPolicy | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        max_retry_wait: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self._on_attempt = on_attempt
        self._providers = dict(providers)
        self._routes = {k: [parse_model_ref(r) for r in v] for k, v in (routes or {}).items()}
        self._retry = retry
        self._max_retry_wait = max_retry_wait
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        policy = breaker or BreakerPolicy()
        self._breakers = {
            name: CircuitBreaker(name, policy, clock=clock) for name in self._providers
        }
        unknown = sorted(set(rate_limits or {}) - set(self._providers))
        if unknown:
            raise ConfigError(
                f"rate limits name unknown providers {unknown}",
                hint=f"Known providers: {sorted(self._providers)}",
            )
        self._limiters = {
            name: TokenBucket(limit, clock=clock, sleep=sleep)
            for name, limit in (rate_limits or {}).items()
        }

    @property
    def providers(self) -> Mapping[str, ModelProvider]:
        return dict(self._providers)

    @property
    def routes(self) -> Mapping[str, list[ModelRef]]:
        return {k: list(v) for k, v in self._routes.items()}

    def breaker(self, provider: str) -> CircuitBreaker:
        """The circuit breaker of one provider (for health pages and tests)."""
        return self._breakers[provider]

    def _check_provider(self, ref: ModelRef) -> None:
        if ref.provider not in self._providers:
            raise ConfigError(
                f"model {ref} names provider {ref.provider!r}, which is not configured",
                hint=f"Configure it under models.providers; known: {sorted(self._providers)}",
            )

    def candidates(self, target: str) -> list[ModelRef]:
        refs = self._routes.get(target) or [parse_model_ref(target)]
        for ref in refs:
            self._check_provider(ref)
        return refs

    async def complete(self, target: str, request: ModelRequest) -> ModelResponse:
        """The first candidate's answer that succeeds. When all fail, the error raised is the
        last one a provider really gave (a paused circuit says nothing about the request), with
        every candidate's outcome under ``details["candidates"]``."""
        failures: list[tuple[ModelRef, ProviderError]] = []
        for ref in self.candidates(target):
            try:
                return await self._try_candidate(target, ref, request)
            except ProviderError as exc:
                failures.append((ref, exc))
        real = [exc for _, exc in failures if not isinstance(exc, CircuitOpen)]
        chosen = real[-1] if real else failures[-1][1]
        if len(failures) > 1:
            chosen.details["candidates"] = [
                {"model": str(ref), "code": exc.code, "message": exc.message}
                for ref, exc in failures
            ]
        raise chosen

    def _report(
        self,
        target: str,
        ref: ModelRef,
        attempt: int,
        outcome: AttemptOutcome,
        error: ProviderError | None = None,
        wait: float | None = None,
    ) -> None:
        if self._on_attempt is not None:
            code = error.code if error is not None else None
            self._on_attempt(
                Attempt(
                    target=target,
                    model=str(ref),
                    attempt=attempt,
                    outcome=outcome,
                    error_code=code,
                    wait=wait,
                )
            )

    async def _try_candidate(
        self, target: str, ref: ModelRef, request: ModelRequest
    ) -> ModelResponse:
        """Up to ``retry.max_attempts`` calls to one candidate; raises its last error."""
        provider = self._providers[ref.provider]
        breaker = self._breakers[ref.provider]
        limiter = self._limiters.get(ref.provider)
        call = request.model_copy(update={"model": ref.model})
        attempt = 0
        while True:
            attempt += 1
            try:
                breaker.before_call()  # CircuitOpen is retryable, but not here: fall back
            except CircuitOpen as exc:
                self._report(target, ref, attempt, "skipped", exc)
                raise
            try:
                # Inside the try: a cancelled wait must still free a half-open probe slot.
                if limiter is not None:
                    await limiter.acquire(estimate_tokens(call))
                response = await provider.complete(call)
            except ProviderError as exc:
                if not exc.retryable:
                    breaker.record_neutral()
                    self._report(target, ref, attempt, "failed", exc)
                    raise
                breaker.record_failure()
                wait = self._wait_before_retry(exc, attempt)
                # Once the breaker has opened, retrying would only meet CircuitOpen and hide
                # the real error: give up on this candidate with the error it really gave.
                if wait is None or breaker.state != "closed":
                    self._report(target, ref, attempt, "failed", exc)
                    raise
                self._report(target, ref, attempt, "retry", exc, wait)
                await self._sleep(wait)
                continue
            except BaseException:
                # Cancellation or a bug: says nothing about the provider's health.
                breaker.record_neutral()
                raise
            breaker.record_success()
            self._report(target, ref, attempt, "ok")
            return response

    def _wait_before_retry(self, exc: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up on this candidate."""
        if attempt >= self._retry.max_attempts:
            return None
        floor = 0.0
        if isinstance(exc, ProviderRateLimited) and exc.retry_after is not None:
            if exc.retry_after > self._max_retry_wait:
                return None
            floor = exc.retry_after
        return self._retry.delay(attempt, self._rng, floor=floor)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
