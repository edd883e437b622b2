"""Guards: PII masking, prompt-injection and secret detection at every trust boundary.

Build a ``GuardPipeline`` from the ``guards:`` section of bastion.yaml and call
``scan(text, ScanContext(boundary=..., tenant_id=..., run_id=...))``; the ``GuardDecision`` says
allow / log / mask / quarantine / review / block and carries the text that may pass. Each guard
can also be used alone through the ``Guard`` protocol:
``scan(text, context) -> list[GuardFinding]``.
See docs/guards.md.
"""

from bastion.governance.guards._config import (
    CustomPattern,
    DenyList,
    GuardsConfig,
    InjectionConfig,
    PiiConfig,
    SecretsConfig,
    VaultConfig,
)
from bastion.governance.guards._errors import GuardConfigError, GuardError, GuardTripped
from bastion.governance.guards._injection import InjectionGuard
from bastion.governance.guards._mask import mask_text
from bastion.governance.guards._pii import PII_ENTITIES, PiiGuard
from bastion.governance.guards._pipeline import GuardPipeline, quarantine_notice
from bastion.governance.guards._secrets import SecretGuard
from bastion.governance.guards._types import (
    BOUNDARIES,
    Boundary,
    Guard,
    GuardAction,
    GuardDecision,
    GuardFinding,
    Mode,
    ScanContext,
)
from bastion.governance.guards._vault import Vault

__all__ = [
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
