"""The guards' public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import bastion.governance.guards as guards

EXPECTED = [
    "BOUNDARIES",
    "Boundary",
    "CustomPattern",
    "DenyList",
    "Guard",
    "GuardAction",
    "GuardConfigError",
    "GuardDecision",
    "GuardError",
    "GuardFinding",
    "GuardPipeline",
    "GuardTripped",
    "GuardsConfig",
    "InjectionConfig",
    "InjectionGuard",
    "Mode",
    "PII_ENTITIES",
    "PiiConfig",
    "PiiGuard",
    "ScanContext",
    "SecretGuard",
    "SecretsConfig",
    "Vault",
    "VaultConfig",
    "mask_text",
    "quarantine_notice",
]


def test_all_is_pinned_and_sorted() -> None:
    assert guards.__all__ == EXPECTED
    assert guards.__all__ == sorted(guards.__all__)
    for name in guards.__all__:
        assert hasattr(guards, name), name


def test_guards_satisfy_the_protocol(
    pii: guards.PiiGuard, injection: guards.InjectionGuard, secrets_guard: guards.SecretGuard
) -> None:
    for guard in (pii, injection, secrets_guard):
        assert isinstance(guard, guards.Guard)


def test_module_size_limit() -> None:
    from pathlib import Path

    for path in Path(guards.__file__).parent.glob("*.py"):
        lines = path.read_text(encoding="utf-8").count("\n")
        assert lines < 800, f"{path.name} has {lines} lines"
