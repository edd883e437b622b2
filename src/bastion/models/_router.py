"""The model router: resolves a target (route name or ``provider:model``) to providers.

Owns: choosing the provider for a call and falling back across candidates.
Does not own: any wire format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bastion.core.errors import ConfigError, ProviderError
from bastion.core.messages import ModelRequest, ModelResponse
from bastion.models._base import ModelProvider, ModelRef, parse_model_ref


class ModelRouter:
    def __init__(
        self,
        providers: Mapping[str, ModelProvider],
        *,
        routes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._routes = {k: [parse_model_ref(r) for r in v] for k, v in (routes or {}).items()}

    def candidates(self, target: str) -> list[ModelRef]:
        refs = self._routes.get(target) or [parse_model_ref(target)]
        for ref in refs:
            if ref.provider not in self._providers:
                raise ConfigError(
                    f"model {ref} names provider {ref.provider!r}, which is not configured",
                    hint=f"Configure it under models.providers; known: {sorted(self._providers)}",
                )
        return refs

    async def complete(self, target: str, request: ModelRequest) -> ModelResponse:
        last: ProviderError | None = None
        for ref in self.candidates(target):
            provider = self._providers[ref.provider]
            try:
                return await provider.complete(request.model_copy(update={"model": ref.model}))
            except ProviderError as exc:
                last = exc
                if not exc.retryable:
                    raise
        assert last is not None
        raise last

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
