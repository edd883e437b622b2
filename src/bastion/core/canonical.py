"""Canonical JSON and content hashes: the one way Bastion turns data into bytes it compares.

Owns: deterministic serialisation (sorted keys, no whitespace, UTF-8) and SHA-256 digests of it.
Used by the journal (input hashes), the audit chain and idempotency keys. Does not own storage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__} canonically")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` so equal data always gives equal text."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
    )


def digest(value: Any) -> str:
    """SHA-256 (hex, first 32 chars) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:32]


def chain(previous: str, value: Any) -> str:
    """Digest of ``value`` linked to ``previous``: a running hash over a sequence."""
    h = hashlib.sha256(previous.encode("ascii"))
    h.update(canonical_json(value).encode("utf-8"))
    return h.hexdigest()[:32]
