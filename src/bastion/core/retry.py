"""Retry policy and backoff arithmetic (exponential with jitter). Pure: no sleeping here.

Owns: when to retry and how long to wait. Does not own: the loops that retry (engine, router).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(kw_only=True, frozen=True)
class RetryPolicy:
    """``max_attempts`` counts the first try. ``retry_on`` names exception types worth retrying;
    Bastion's own errors are retried when their ``retryable`` flag is set, whatever this says."""

    max_attempts: int = 3
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.25
    retry_on: tuple[type[BaseException], ...] = field(default=(TimeoutError, ConnectionError))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, attempt: int, rng: random.Random | None = None, *, floor: float = 0.0) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``floor`` is a minimum the server asked for (e.g. ``Retry-After``); jitter never goes
        below it, so a polite client never comes back early.
        """
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        spread = base * self.jitter
        r = rng if rng is not None else random
        wait = base + r.uniform(-spread, spread)
        return max(floor, wait, 0.0)


NO_RETRY = RetryPolicy(max_attempts=1)
