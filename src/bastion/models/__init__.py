"""Model providers behind one protocol, and the router that picks and falls back between them.

A model is named by one string, ``"provider:model"`` (``"openai:gpt-4o-mini"``,
``"local:smollm2"``, ``"scripted:demo"``). The engine only ever sees ``ModelProvider`` and
``ModelRouter``; providers are built from ``ModelsSettings`` by ``build_router``.
"""

from bastion.models._anthropic import AnthropicProvider
from bastion.models._base import ModelProvider, ModelRef, parse_model_ref
from bastion.models._config import (
    BreakerSettings,
    ModelsSettings,
    ProviderSettings,
    RetrySettings,
    build_provider,
    build_router,
)
from bastion.models._http import parse_retry_after
from bastion.models._limits import BreakerPolicy, CircuitBreaker, RateLimit, TokenBucket
from bastion.models._local import LocalProvider
from bastion.models._openai import OpenAIProvider
from bastion.models._router import Attempt, ModelRouter

__all__ = [
    "AnthropicProvider",
    "Attempt",
    "BreakerPolicy",
    "BreakerSettings",
    "CircuitBreaker",
    "LocalProvider",
    "ModelProvider",
    "ModelRef",
    "ModelRouter",
    "ModelsSettings",
    "OpenAIProvider",
    "ProviderSettings",
    "RateLimit",
    "RetrySettings",
    "TokenBucket",
    "build_provider",
    "build_router",
    "parse_model_ref",
    "parse_retry_after",
]
