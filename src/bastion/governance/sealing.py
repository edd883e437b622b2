"""Sealing at rest: with guards on, what the guards detect never reaches the store in clear.

Owns: replacing every personal-data and secret value the PII and secret detectors find in a
value about to be stored (run input and output, step inputs, outputs and errors, decisions) by a
sealed token, keeping the values in the run's *sealed vault*, and restoring them when a run is
read back for execution or by an authorised operator. Also owns the keys: each run gets its own
random data key; the vault is encrypted with it (AES-256-GCM, bound to tenant and run), and the
data key is stored only wrapped by the deployment's key provider (a local key from config, or a
KMS-style hook). Destroying a run's wrapped data key (at its end, or when its retention period
is over) makes its sealed values unrecoverable. Does not own detection (``guards``) nor when
keys are destroyed (the engine and the worker's retention sweep).

A token is ``\\ue000TYPE:N\\ue001`` (private-use characters that ordinary text does not hold; a
literal ``\\ue000`` in stored text is escaped as ``\\ue000\\ue001``), distinct from the
``<TYPE_N>`` placeholders the model sees: sealing and unsealing round-trip text exactly, the
model's placeholders included, so a replayed run sees byte for byte what the first execution saw.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from bastion.core.errors import ConfigError, SealedDataDestroyed

_OPEN, _CLOSE = "\ue000", "\ue001"
_TOKEN = re.compile(f"{_OPEN}(?:([A-Z][A-Z0-9_]{{0,40}}):(\\d{{1,9}}))?{_CLOSE}")
_VAULT_MAGIC = "sv1"
#: Strings shorter than this hold no detectable value (skips scanning ids, flags, numbers).
_MIN_SCAN = 5

Detect = Callable[[str], list[tuple[int, int, str]]]


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps per-run data keys: a local key (``LocalKeys``) or a KMS. ``context``
    binds a wrapped key to its tenant and run (pass it as the KMS encryption context)."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, *, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes: ...


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ConfigError(
            "sealing data at rest needs the cryptography package",
            hint="pip install 'bastion[guards]'",
        ) from exc
    return AESGCM(key)


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (HKDF-SHA256), so one configured key never serves two
    (wrapping data keys, keying mask hashes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"bastion {purpose}".encode()
    ).derive(master)


class LocalKeys:
    """A key provider over one 32-byte master key (``guards.vault.key`` or its key file)."""

    def __init__(self, master: bytes) -> None:
        if len(master) != 32:
            raise ConfigError("the vault key must be 32 bytes", hint="`bastion guard key`")
        self._kek = derive_key(master, "vault key wrapping")
        self._id = "local:" + hashlib.sha256(self._kek).hexdigest()[:12]

    @property
    def key_id(self) -> str:
        return self._id

    def wrap(self, data_key: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + bytes(_aesgcm(self._kek).encrypt(nonce, data_key, context))

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return bytes(_aesgcm(self._kek).decrypt(wrapped[:12], wrapped[12:], context))
        except InvalidTag as exc:
            raise ConfigError(
                "a run's data key did not unwrap: the vault key differs from the one it was "
                "sealed with",
                hint="Configure the guards.vault.key the deployment used.",
            ) from exc


def load_or_create_key_file(path: str) -> bytes:
    """The master key in ``path`` (urlsafe base64), created (mode 0600) if it does not exist:
    the embedded default's key beside its database."""
    try:
        with open(path, "rb") as f:
            raw = base64.urlsafe_b64decode(f.read().strip())
    except FileNotFoundError:
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.urlsafe_b64encode(key) + b"\n")
        return key
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the vault key file {path}: {exc}") from None
    if len(raw) != 32:
        raise ConfigError(f"the vault key file {path} does not hold a 32-byte key")
    return raw


def vault_master_key(config: Any, store_url: str) -> bytes:
    """The deployment's vault key: ``guards.vault.key``, else ``guards.vault.key_file``, else
    (embedded default) ``<database file>.key`` beside a SQLite store, created on first use. A
    PostgreSQL deployment names its key (several workers must share it)."""
    if config.key is not None:
        return base64.urlsafe_b64decode(config.key.get_secret_value().encode())
    path = config.key_file
    if path is None and store_url.startswith(("sqlite:///", "sqlite+aiosqlite:///")):
        db = store_url.split(":///", 1)[1]
        if db and db != ":memory:" and not db.startswith("file:"):
            path = f"{db}.key"
    if path is None:
        raise ConfigError(
            "guards are on, so what they detect is sealed at rest, and no vault key is set",
            hint="Set guards.vault.key (generate one with `bastion guard key`), or "
            "guards.vault.key_file, or pass a key_provider (a KMS) to Bastion.",
        )
    return load_or_create_key_file(path)


def _context(tenant: str, run_id: str) -> bytes:
    return f"bastion-run|{tenant}|{run_id}".encode()


class RunSeal:
    """The sealed vault of one run: seal values for the store, unseal them when read back."""

    def __init__(
        self,
        detect: Detect,
        *,
        tenant: str,
        run_id: str,
        data_key: bytes,
        entries: dict[str, str] | None = None,
    ) -> None:
        self._detect = detect
        self._aad = _context(tenant, run_id)
        self._key = data_key
        self._values: dict[str, str] = dict(entries or {})  # token -> value
        self._tokens = {v: k for k, v in self._values.items()}  # value -> token
        self._counts: dict[str, int] = {}
        for token in self._values:
            kind, n = token[1:-1].split(":")
            self._counts[kind] = max(self._counts.get(kind, 0), int(n))
        self.dirty = False
        self._exported = len(self._values)
        self._pattern: re.Pattern[str] | None = None
        self._pattern_size = -1

    # ---- values ----------------------------------------------------------------------------

    def seal(self, value: Any) -> Any:
        """``value`` with every detected value in its strings replaced by a token."""
        if isinstance(value, str):
            return self._seal_text(value)
        if isinstance(value, dict):
            return {k: self.seal(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.seal(v) for v in value]
        return value

    def unseal(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._unseal_text(value) if _OPEN in value else value
        if isinstance(value, dict):
            return {k: self.unseal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unseal(v) for v in value]
        return value

    def _seal_text(self, text: str) -> str:
        escaped = text.replace(_OPEN, _OPEN + _CLOSE)
        if len(text) < _MIN_SCAN:
            return escaped
        spans = self._with_known(text, self._detect(text))
        if not spans:
            return escaped
        out: list[str] = []
        at = 0
        for start, end, kind in spans:
            if start < at:
                continue  # overlapping spans: the first one wins
            out.append(text[at:start].replace(_OPEN, _OPEN + _CLOSE))
            out.append(self._token(kind, text[start:end]))
            at = end
        out.append(text[at:].replace(_OPEN, _OPEN + _CLOSE))
        return "".join(out)

    def _with_known(
        self, text: str, detected: list[tuple[int, int, str]]
    ) -> list[tuple[int, int, str]]:
        """``detected`` plus every other whole-word occurrence of a value this run has sealed
        before: a value found once (a name after "hi", a card in a form) stays sealed where the
        detectors would not see it again (in a log line, a bare list)."""
        known = self._known_pattern()
        if known is None:
            return detected
        spans = list(detected)
        taken = [(a, b) for a, b, _ in detected]
        for m in known.finditer(text):
            a, b = m.span()
            if all(b <= x or a >= y for x, y in taken):
                spans.append((a, b, self._tokens[m.group()][1:].split(":")[0]))
        return sorted(spans)

    def _known_pattern(self) -> re.Pattern[str] | None:
        if self._pattern_size != len(self._tokens):
            values = sorted((v for v in self._tokens if len(v) >= _MIN_SCAN), key=len, reverse=True)
            self._pattern = (
                re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, values)) + r")(?!\w)")
                if values
                else None
            )
            self._pattern_size = len(self._tokens)
        return self._pattern

    def _token(self, kind: str, value: str) -> str:
        token = self._tokens.get(value)
        if token is None:
            safe = re.sub(r"[^A-Z0-9_]", "_", kind.upper())[:40] or "VALUE"
            n = self._counts.get(safe, 0) + 1
            self._counts[safe] = n
            token = f"{_OPEN}{safe}:{n}{_CLOSE}"
            self._tokens[value] = token
            self._values[token] = value
            self.dirty = True
        return token

    def _unseal_text(self, text: str) -> str:
        def swap(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return _OPEN  # an escaped literal
            found = self._values.get(m.group())
            if found is None:
                raise SealedDataDestroyed(
                    "a sealed value is not in its run's vault",
                    hint="The vault does not belong to this text; it was not restored.",
                )
            return found

        return _TOKEN.sub(swap, text)

    # ---- the vault at rest ------------------------------------------------------------------

    def export(self) -> str:
        """The vault encrypted with the run's data key, for ``runs.vault``. It stays ``dirty``
        until the caller says it was stored (``saved``)."""
        payload = json.dumps(self._values, ensure_ascii=False).encode()
        nonce = os.urandom(12)
        body = _aesgcm(self._key).encrypt(nonce, payload, self._aad)
        self._exported = len(self._values)
        return f"{_VAULT_MAGIC}.{base64.b64encode(nonce + body).decode()}"

    def saved(self) -> None:
        """The last export was stored: no token issued before it needs storing again."""
        if self._exported == len(self._values):
            self.dirty = False

    @staticmethod
    def decrypt(blob: str, data_key: bytes, aad: bytes) -> dict[str, str]:
        magic, _, data = blob.partition(".")
        if magic != _VAULT_MAGIC:
            raise ConfigError("a run's sealed vault is in an unknown format")
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(data)
        try:
            payload = _aesgcm(data_key).decrypt(raw[:12], raw[12:], aad)
        except InvalidTag as exc:
            raise ConfigError(
                "a run's sealed vault did not open with its data key (it was altered, or "
                "belongs to another run)",
                hint="Restore the run's vault and vault_key columns from the same backup.",
            ) from exc
        entries: dict[str, str] = json.loads(payload)
        return entries


class Sealing:
    """Deployment-wide: detection and the key provider; opens one ``RunSeal`` per run."""

    def __init__(self, detect: Detect, keys: KeyProvider) -> None:
        self._detect = detect
        self.keys = keys

    def new_run(self, tenant: str, run_id: str) -> tuple[RunSeal, str]:
        """A new run's seal and its wrapped data key (for ``runs.vault_key``)."""
        data_key = os.urandom(32)
        wrapped = self.keys.wrap(data_key, context=_context(tenant, run_id))
        stored = f"{self.keys.key_id}|{base64.b64encode(wrapped).decode()}"
        return RunSeal(self._detect, tenant=tenant, run_id=run_id, data_key=data_key), stored

    def open_run(
        self, tenant: str, run_id: str, vault_key: str | None, vault: str | None
    ) -> RunSeal:
        """The seal of a stored run; ``SealedDataDestroyed`` if its data key is gone."""
        if not vault_key:
            raise SealedDataDestroyed(
                f"run {run_id}'s sealed data was destroyed (its retention ended) or never "
                "sealed; its personal data cannot be restored",
                run_id=run_id,
            )
        _key_id, _, wrapped = vault_key.partition("|")
        context = _context(tenant, run_id)
        data_key = self.keys.unwrap(base64.b64decode(wrapped), context=context)
        entries = RunSeal.decrypt(vault, data_key, context) if vault else {}
        return RunSeal(
            self._detect, tenant=tenant, run_id=run_id, data_key=data_key, entries=entries
        )


def display(text: str) -> str:
    """Sealed tokens shown to a person who may not see the values: ``[EMAIL_ADDRESS#1]``."""

    def show(m: re.Match[str]) -> str:
        return _OPEN if m.group(1) is None else f"[{m.group(1)}#{m.group(2)}]"

    return _TOKEN.sub(show, text) if _OPEN in text else text
