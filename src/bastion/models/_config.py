"""Model settings (the ``models:`` section of ``bastion.yaml``) and building providers from them.

Owns: ``ProviderSettings``, ``ModelsSettings`` and turning them into providers and a router.
API keys named by ``api_key_env`` are read here, from the ``env`` mapping the caller passes in
(the edge reads ``os.environ``; nothing here does). Does not own any provider's behaviour.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bastion.core.errors import ConfigError
from bastion.core.retry import RetryPolicy
from bastion.models._anthropic import AnthropicProvider
from bastion.models._base import ModelProvider, parse_model_ref
from bastion.models._limits import BreakerPolicy, Clock, RateLimit, Sleep
from bastion.models._local import LocalProvider
from bastion.models._openai import OpenAIProvider
from bastion.models._router import Attempt, ModelRouter

ProviderKind = Literal["openai", "anthropic", "local", "scripted"]

_DEFAULT_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class ProviderSettings(BaseModel):
    """One configured provider. ``api_key`` wins over ``api_key_env`` when both are given; a
    missing key is allowed (local OpenAI-compatible servers need none) and surfaces as
    ``ProviderAuthError`` on the first call to a server that wants one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ProviderKind
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = None
    timeout: float = Field(default=60.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    # {model: (usd per 1M input tokens, usd per 1M output tokens)}
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)
    rate_limit_rpm: float | None = Field(default=None, gt=0)
    rate_limit_tpm: float | None = Field(default=None, gt=0)
    # local only: model aliases to GGUF paths, context size, CPU threads
    models: dict[str, str] = Field(default_factory=dict)
    n_ctx: int = Field(default=2048, ge=256)
    threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_kind_options(self) -> ProviderSettings:
        if self.kind in ("local", "scripted") and (self.base_url or self.api_key_env):
            raise ValueError(f"a {self.kind} provider takes no base_url or api_key_env")
        if self.rate_limit_tpm is not None and self.rate_limit_rpm is None:
            raise ValueError("rate_limit_tpm needs rate_limit_rpm too")
        return self

    def rate_limit(self) -> RateLimit | None:
        if self.rate_limit_rpm is None:
            return None
        return RateLimit(
            requests_per_minute=self.rate_limit_rpm, tokens_per_minute=self.rate_limit_tpm
        )


class RetrySettings(BaseModel):
    """Attempts per route candidate and the backoff between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1)
    initial_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=20.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.25, ge=0, le=1)
    # A Retry-After longer than this is not waited for: the router falls back instead.
    max_retry_wait: float = Field(default=60.0, ge=0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            multiplier=self.multiplier,
            jitter=self.jitter,
        )


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    cooldown_seconds: float = Field(default=30.0, ge=0)

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            failure_threshold=self.failure_threshold, cooldown=self.cooldown_seconds
        )


def _default_providers() -> dict[str, ProviderSettings]:
    return {
        "openai": ProviderSettings(
            kind="openai", base_url=_DEFAULT_URLS["openai"], api_key_env="OPENAI_API_KEY"
        ),
        "anthropic": ProviderSettings(
            kind="anthropic", base_url=_DEFAULT_URLS["anthropic"], api_key_env="ANTHROPIC_API_KEY"
        ),
        "local": ProviderSettings(kind="local"),
    }


class ModelsSettings(BaseModel):
    """The ``models:`` section: providers by name, routes (name → ordered ``provider:model``
    candidates), retry and breaker knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    routes: dict[str, list[str]] = Field(default_factory=dict)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    @model_validator(mode="after")
    def _check_routes(self) -> ModelsSettings:
        for route, refs in self.routes.items():
            if not refs:
                raise ValueError(f"route {route!r} lists no models")
            for ref in refs:
                try:
                    provider = parse_model_ref(ref).provider
                except ConfigError as exc:
                    raise ValueError(f"route {route!r}: {exc.message}") from exc
                if provider not in self.providers:
                    raise ValueError(
                        f"route {route!r} uses provider {provider!r}, which is not configured"
                    )
        return self


def _api_key(settings: ProviderSettings, env: Mapping[str, str]) -> str | None:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if settings.api_key_env:
        return env.get(settings.api_key_env) or None
    return None


def build_provider(
    name: str,
    settings: ProviderSettings,
    *,
    env: Mapping[str, str],
    scripted: ModelProvider | None = None,
) -> ModelProvider:
    """The provider ``settings`` describe, named ``name``. A ``scripted`` provider is the one the
    app passes in, or an empty ``ScriptedModel`` (every call fails loudly until scripted)."""
    match settings.kind:
        case "openai" | "anthropic":
            cls = OpenAIProvider if settings.kind == "openai" else AnthropicProvider
            return cls(
                name=name,
                base_url=settings.base_url or _DEFAULT_URLS[settings.kind],
                api_key=_api_key(settings, env),
                timeout=settings.timeout,
                headers=settings.headers,
                prices=settings.prices,
            )
        case "local":
            return LocalProvider(
                name=name, n_ctx=settings.n_ctx, threads=settings.threads, models=settings.models
            )
        case "scripted":
            if scripted is not None:
                return scripted
            from bastion.models._scripted import ScriptedModel  # loaded only when configured

            return ScriptedModel(name=name)


def build_router(
    settings: ModelsSettings,
    *,
    env: Mapping[str, str],
    extra_providers: Mapping[str, ModelProvider] | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    rng: random.Random | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> ModelRouter:
    """A ``ModelRouter`` over every configured provider. ``extra_providers`` (by name) replace or
    add providers built in code, e.g. the app's ``ScriptedModel`` for a ``scripted`` entry."""
    extra = dict(extra_providers or {})
    providers: dict[str, ModelProvider] = {
        name: extra.get(name) or build_provider(name, ps, env=env)
        for name, ps in settings.providers.items()
    }
    for name, provider in extra.items():
        providers.setdefault(name, provider)
    rate_limits = {
        name: limit
        for name, ps in settings.providers.items()
        if (limit := ps.rate_limit()) is not None
    }
    return ModelRouter(
        providers,
        routes=settings.routes,
        retry=settings.retry.policy(),
        breaker=settings.breaker.policy(),
        rate_limits=rate_limits,
        max_retry_wait=settings.retry.max_retry_wait,
        sleep=sleep,
        clock=clock,
        rng=rng,
        on_attempt=on_attempt,
    )
