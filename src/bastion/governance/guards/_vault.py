"""The per-run masking vault: placeholder <-> real value, in memory.

Owns issuing typed placeholders stable within a run (``<PERSON_1>`` every time the same name
appears) and restoring them in later text (a model's answer, a tool's arguments). Does not own
deciding *when* restoring is allowed: that is policy, applied by the caller (the pipeline exposes
``unmask``; the engine asks policy first). It is never stored: a resumed run rebuilds it by
masking the same texts again (masking is deterministic); what is stored is sealed by
``bastion.governance.sealing``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

from bastion.governance.guards._errors import GuardError

PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z0-9_]{0,40}?)_(\d{1,6})>")


def _normalise(value: str) -> str:
    # The same person written with different spacing is the same person.
    return " ".join(value.split())


class Vault:
    """Placeholder mapping of one run. Not thread-safe: a run's steps are sequential."""

    def __init__(self, *, tenant_id: str | None = None, run_id: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.run_id = run_id
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def placeholder(self, entity_type: str, value: str, *, avoid: str = "") -> str:
        """The placeholder for ``value``; issues the next number for a new value.

        ``avoid`` is the text being masked: a number whose placeholder already appears in it
        literally is skipped, so restoring can never replace the user's own text.
        """
        key = (entity_type, _normalise(value))
        found = self._by_value.get(key)
        if found is not None:
            return found
        n = self._counters.get(entity_type, 0)
        while True:
            n += 1
            candidate = f"<{entity_type}_{n}>"
            if candidate not in avoid:
                break
        self._counters[entity_type] = n
        self._by_value[key] = candidate
        self._by_placeholder[candidate] = value
        return candidate

    def value_of(self, placeholder: str) -> str | None:
        return self._by_placeholder.get(placeholder)

    def unmask(self, text: str, *, types: frozenset[str] | None = None) -> str:
        """Restore every placeholder this vault issued (optionally only some entity types)."""

        def swap(m: re.Match[str]) -> str:
            if types is not None and m.group(1) not in types:
                return m.group()
            return self._by_placeholder.get(m.group(), m.group())

        return PLACEHOLDER_RE.sub(swap, text)

    def entries(self) -> Mapping[str, str]:
        return dict(self._by_placeholder)


def decode_key(key: str) -> bytes:
    """The raw 32-byte key from its urlsafe base64 form in config."""
    raw = base64.urlsafe_b64decode(key.encode())
    if len(raw) != 32:
        raise GuardError("vault key must be 32 bytes", hint="Generate one: `bastion guard key`.")
    return raw
