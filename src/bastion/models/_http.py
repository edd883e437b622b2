"""The HTTP boundary shared by the HTTP model providers: send one JSON POST, translate failures.

Owns: turning every httpx exception, HTTP status and unparsable body into a ``ProviderError``,
and parsing ``Retry-After``. Does not own any provider's wire format (request or response shape).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bastion.core.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRequestRejected,
    ProviderResponseInvalid,
    ProviderUnavailable,
)

JsonDict = dict[str, Any]

# How much of an error body we keep in the error: enough to diagnose, not enough to flood logs.
_DETAIL_CHARS = 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns ``None`` when absent or unreadable; a date in the past means 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN guard
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _error_detail(response: httpx.Response) -> str:
    """The provider's own error message when the body has one (OpenAI and Anthropic both use
    ``{"error": {"message": ...}}``), else the start of the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_DETAIL_CHARS]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:_DETAIL_CHARS]
        if isinstance(err, str):
            return err[:_DETAIL_CHARS]
    return response.text[:_DETAIL_CHARS]


def _retry_after(headers: httpx.Headers) -> float | None:
    """``retry-after-ms`` (sent by OpenAI and compatible servers) is more precise than the
    standard ``Retry-After``; use it when it is readable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            value = float("nan")
        if value == value and value >= 0:  # not NaN, not negative
            return value / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def error_for_status(provider: str, response: httpx.Response) -> ProviderError:
    """The ``ProviderError`` for a non-2xx response."""
    status = response.status_code
    detail = _error_detail(response)
    message = f"{provider} answered HTTP {status}: {detail}" if detail else f"{provider}: {status}"
    if status == 429:
        return ProviderRateLimited(
            message,
            provider=provider,
            status=status,
            retry_after=_retry_after(response.headers),
        )
    if status in (401, 403):
        return ProviderAuthError(message, provider=provider, status=status)
    # 408 (request timeout) and 409 (conflict, e.g. a concurrent idempotent request) are
    # transient by the providers' own documentation; 5xx includes Anthropic's 529 "overloaded".
    if status >= 500 or status in (408, 409):
        return ProviderUnavailable(message, provider=provider, status=status)
    return ProviderRequestRejected(message, provider=provider, status=status)


async def post_json(
    client: httpx.AsyncClient,
    *,
    provider: str,
    url: str,
    body: JsonDict,
    headers: dict[str, str] | None = None,
) -> JsonDict:
    """POST ``body`` as JSON and return the decoded JSON object, or raise a ``ProviderError``."""
    try:
        response = await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(
            f"{provider} timed out ({type(exc).__name__})", provider=provider, reason="timeout"
        ) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            f"{provider} could not be reached: {type(exc).__name__}: {exc}",
            provider=provider,
            reason="transport",
        ) from exc
    except httpx.DecodingError as exc:
        raise ProviderResponseInvalid(
            f"{provider} sent a body that could not be decoded: {exc}", provider=provider
        ) from exc
    except httpx.RequestError as exc:  # e.g. too many redirects: the endpoint is misbehaving
        raise ProviderUnavailable(
            f"{provider} request failed: {type(exc).__name__}: {exc}",
            provider=provider,
            reason="request",
        ) from exc
    if not response.is_success:
        raise error_for_status(provider, response)
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProviderResponseInvalid(
            f"{provider} sent a body that is not JSON: {response.text[:200]!r}",
            provider=provider,
            status=response.status_code,
        ) from exc
    if not isinstance(data, dict):
        raise ProviderResponseInvalid(
            f"{provider} sent JSON that is not an object", provider=provider
        )
    return data


def invalid(provider: str, what: str) -> ProviderResponseInvalid:
    """A response that parsed as JSON but does not follow the provider's API."""
    return ProviderResponseInvalid(f"{provider} response is malformed: {what}", provider=provider)


def cost_usd(
    prices: dict[str, tuple[float, float]], model: str, input_tokens: int, output_tokens: int
) -> float:
    """USD for one call from a ``{model: (usd_per_1M_in, usd_per_1M_out)}`` table (0 if absent)."""
    price = prices.get(model)
    if price is None:
        return 0.0
    per_in, per_out = price
    return round((input_tokens * per_in + output_tokens * per_out) / 1_000_000, 8)


IDEMPOTENCY_METADATA_KEY = "idempotency_key"


def metadata_headers(metadata: dict[str, str]) -> dict[str, str]:
    """Headers derived from ``ModelRequest.metadata``: an ``Idempotency-Key``, taken from
    ``idempotency_key`` or else built as ``run_id:step_no`` (the step's key in the journal), so
    a retried call is recognisable to servers and gateways that deduplicate. Other metadata
    (tenant, principal) is ours and is not sent to a third party."""
    key = metadata.get(IDEMPOTENCY_METADATA_KEY)
    if not key and metadata.get("run_id") and metadata.get("step_no"):
        key = f"{metadata['run_id']}:{metadata['step_no']}"
    return {"Idempotency-Key": key} if key else {}
