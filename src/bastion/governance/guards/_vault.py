"""The per-run masking vault: placeholder <-> real value, sealed with AES-256-GCM at rest.

Owns issuing typed placeholders stable within a run (``<PERSON_1>`` every time the same name
appears), restoring them in later text (a model's answer, a tool's arguments), and the sealed
byte form the engine stores with the run. Does not own deciding *when* restoring is allowed: that
is policy, applied by the caller (the pipeline exposes ``unmask``; the engine asks policy first).

Sealed form: ``b"bv1." + nonce(12) + AES-GCM(key, nonce, json(entries), aad=tenant|run)``. The
associated data binds a sealed vault to its tenant and run, so a blob copied into another run
does not open.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bastion.governance.guards._errors import GuardError

PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z0-9_]{0,40}?)_(\d{1,6})>")
_MAGIC = b"bv1."

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _aad(tenant_id: str | None, run_id: str | None) -> bytes:
    return f"{tenant_id or ''}|{run_id or ''}".encode()


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

    # ---- at rest --------------------------------------------------------------------------------

    def seal(self, key: bytes) -> bytes:
        """Encrypt the mapping for storage (AES-256-GCM, bound to tenant and run)."""
        aesgcm = _aesgcm(key)
        payload = json.dumps(
            {"v": 1, "entries": [[p, v] for p, v in self._by_placeholder.items()]},
            ensure_ascii=False,
        ).encode()
        nonce = os.urandom(12)
        return _MAGIC + nonce + aesgcm.encrypt(nonce, payload, _aad(self.tenant_id, self.run_id))

    @classmethod
    def unseal(
        cls, blob: bytes, key: bytes, *, tenant_id: str | None = None, run_id: str | None = None
    ) -> Vault:
        """Open a sealed vault; raises ``GuardError`` if the key, tenant or run do not match."""
        from cryptography.exceptions import InvalidTag

        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + 12 + 16:
            raise GuardError("not a sealed Bastion vault", hint="Pass the bytes from Vault.seal().")
        nonce, body = blob[4:16], blob[16:]
        try:
            payload = _aesgcm(key).decrypt(nonce, body, _aad(tenant_id, run_id))
        except InvalidTag as exc:
            raise GuardError(
                "vault did not open: wrong key, or sealed for another tenant or run",
                hint="Use the guards.vault.key the vault was sealed with.",
            ) from exc
        vault = cls(tenant_id=tenant_id, run_id=run_id)
        for placeholder, value in json.loads(payload)["entries"]:
            m = PLACEHOLDER_RE.fullmatch(placeholder)
            if m is None:
                continue
            kind, n = m.group(1), int(m.group(2))
            vault._by_placeholder[placeholder] = value
            vault._by_value[(kind, _normalise(value))] = placeholder
            vault._counters[kind] = max(vault._counters.get(kind, 0), n)
        return vault


def decode_key(key: str) -> bytes:
    """The raw 32-byte key from its urlsafe base64 form in config."""
    raw = base64.urlsafe_b64decode(key.encode())
    if len(raw) != 32:
        raise GuardError("vault key must be 32 bytes", hint="Generate one: `bastion guard key`.")
    return raw


def _aesgcm(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - the guards extra installs it
        raise GuardError(
            "sealing the vault needs the cryptography package",
            hint="pip install 'bastion[guards]'",
        ) from exc
    if len(key) != 32:
        raise GuardError("vault key must be 32 bytes (AES-256)")
    return AESGCM(key)
