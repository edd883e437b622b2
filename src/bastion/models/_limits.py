"""Client-side protection for model providers: a token-bucket rate limiter and a circuit breaker.

Owns: when a call to a provider may start (rate) and whether it may be tried at all (breaker).
Does not own: retries, backoff or fallback (the router), nor any transport.

Both take an injectable monotonic ``clock`` (seconds as a float) and the limiter an injectable
``sleep``, so tests drive time by hand instead of waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from bastion.core.errors import CircuitOpen

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
BreakerState = Literal["closed", "open", "half_open"]


@dataclass(kw_only=True, frozen=True)
class RateLimit:
    """Requests per minute and, optionally, (estimated) tokens per minute for one provider."""

    requests_per_minute: float
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        if self.tokens_per_minute is not None and self.tokens_per_minute <= 0:
            raise ValueError("tokens_per_minute must be positive")


class TokenBucket:
    """Token-bucket limiter: bursts up to one minute's allowance, then a steady refill.

    ``acquire(tokens)`` waits until one request slot and ``tokens`` token units are available.
    Waiters are served one at a time (a lock), so a large request cannot be starved forever by a
    stream of small ones.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._requests = limit.requests_per_minute
        self._tokens = limit.tokens_per_minute or 0.0
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        rpm = self.limit.requests_per_minute
        self._requests = min(rpm, self._requests + elapsed * rpm / 60.0)
        tpm = self.limit.tokens_per_minute
        if tpm is not None:
            self._tokens = min(tpm, self._tokens + elapsed * tpm / 60.0)

    def _wait_needed(self, tokens: float) -> float:
        """Seconds until both buckets hold enough; 0 when the call may start now."""
        wait = 0.0
        if self._requests < 1.0:
            wait = (1.0 - self._requests) * 60.0 / self.limit.requests_per_minute
        tpm = self.limit.tokens_per_minute
        if tpm is not None and tokens > 0:
            # A request larger than the whole bucket would never fit; it waits for a full bucket.
            need = min(tokens, tpm)
            if self._tokens < need:
                wait = max(wait, (need - self._tokens) * 60.0 / tpm)
        return wait

    async def acquire(self, tokens: float = 0.0) -> float:
        """Wait for capacity and take it. Returns the seconds waited (as told by the clock)."""
        start = self._clock()
        async with self._lock:
            while True:
                self._refill()
                wait = self._wait_needed(tokens)
                if wait <= 0.0:
                    break
                await self._sleep(wait)
            self._requests -= 1.0
            if self.limit.tokens_per_minute is not None:
                self._tokens -= min(tokens, self.limit.tokens_per_minute)
            return self._clock() - start


@dataclass(kw_only=True, frozen=True)
class BreakerPolicy:
    """Open after ``failure_threshold`` consecutive retryable failures; probe after ``cooldown``."""

    failure_threshold: int = 5
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown < 0:
            raise ValueError("cooldown must not be negative")


class CircuitBreaker:
    """closed → open (after N consecutive failures) → half_open (after the cool-down, one probe
    call at a time) → closed on the probe's success, or open again on its failure.
    """

    def __init__(
        self, name: str, policy: BreakerPolicy | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.policy.cooldown:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go out now. In half-open state exactly one
        probe is let through until its outcome is recorded."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._probing:
            self._probing = True
            return
        assert self._opened_at is not None
        remaining = max(0.0, self.policy.cooldown - (self._clock() - self._opened_at))
        raise CircuitOpen(
            f"circuit for provider {self.name!r} is open after {self._failures} "
            f"consecutive failures",
            provider=self.name,
            retry_in=round(remaining, 3),
        )

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        """A retryable failure (outage, timeout, rate limit, garbage body)."""
        self._failures += 1
        if self._probing or self._failures >= self.policy.failure_threshold:
            # A failed probe restarts the whole cool-down.
            self._opened_at = self._clock()
        self._probing = False

    def record_neutral(self) -> None:
        """The call ended without telling us about the provider's health (a rejected request,
        a cancellation, a bug on our side): free the probe slot, change nothing else."""
        self._probing = False
