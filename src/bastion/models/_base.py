"""The model-provider protocol and model reference strings.

Owns: ``ModelProvider`` (``complete(request) -> response``) and parsing ``"provider:model"``.
Does not own any transport: each provider module owns its wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bastion.core.errors import ConfigError
from bastion.core.messages import ModelRequest, ModelResponse


@runtime_checkable
class ModelProvider(Protocol):
    """One model backend. ``name`` is the provider part of ``"provider:model"``.

    ``complete`` raises only ``ProviderError`` subclasses (translated at the provider boundary);
    it never retries on its own: the router owns retries, fallbacks and breakers.
    """

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


def parse_model_ref(ref: str) -> ModelRef:
    """``"openai:gpt-4o-mini"`` → ModelRef(provider="openai", model="gpt-4o-mini")."""
    provider, sep, model = ref.partition(":")
    if not sep or not provider or not model:
        raise ConfigError(
            f"model {ref!r} is not of the form 'provider:model'",
            hint="Write e.g. 'openai:gpt-4o-mini', 'anthropic:claude-3-5-haiku', "
            "'local:smollm2' or 'scripted:demo'.",
        )
    return ModelRef(provider=provider.strip().lower(), model=model.strip())
