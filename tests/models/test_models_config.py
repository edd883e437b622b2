"""ProviderSettings / ModelsSettings validation and building providers and routers from them."""

from __future__ import annotations

import pydantic
import pytest

from bastion.core.messages import Message, ModelRequest
from bastion.models import (
    AnthropicProvider,
    LocalProvider,
    ModelsSettings,
    OpenAIProvider,
    ProviderSettings,
    build_provider,
    build_router,
)
from bastion.testing import HttpStubServer, ScriptedModel, StubResponse, reply


def test_defaults_name_the_three_real_providers() -> None:
    settings = ModelsSettings()
    assert settings.providers["openai"].base_url == "https://api.openai.com/v1"
    assert settings.providers["openai"].api_key_env == "OPENAI_API_KEY"
    assert settings.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert settings.providers["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    assert settings.providers["local"].kind == "local"
    assert settings.retry.max_attempts >= 1 and settings.breaker.failure_threshold >= 1


def test_unknown_keys_and_bad_routes_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        ProviderSettings.model_validate({"kind": "openai", "api_keey": "x"})
    with pytest.raises(pydantic.ValidationError):
        ProviderSettings.model_validate({"kind": "bogus"})
    with pytest.raises(pydantic.ValidationError, match="not configured"):
        ModelsSettings.model_validate({"routes": {"fast": ["groq:llama"]}})
    with pytest.raises(pydantic.ValidationError, match="provider:model"):
        ModelsSettings.model_validate({"routes": {"fast": ["gpt-4o"]}})
    with pytest.raises(pydantic.ValidationError):
        ProviderSettings.model_validate({"kind": "local", "base_url": "http://x"})


def test_api_key_comes_from_the_env_mapping_given() -> None:
    settings = ProviderSettings(kind="openai", base_url="http://h/v1", api_key_env="MY_KEY")
    provider = build_provider("vllm", settings, env={"MY_KEY": "sk-env"})
    assert isinstance(provider, OpenAIProvider) and provider.name == "vllm"
    assert provider._client.headers["authorization"] == "Bearer sk-env"
    keyless = build_provider("ollama", settings, env={})
    assert isinstance(keyless, OpenAIProvider)
    assert "authorization" not in keyless._client.headers
    # The key is secret in dumps and reprs.
    explicit = ProviderSettings(kind="anthropic", api_key="sk-literal")
    assert "sk-literal" not in repr(explicit) and "sk-literal" not in explicit.model_dump_json()
    anthropic = build_provider("anthropic", explicit, env={})
    assert isinstance(anthropic, AnthropicProvider)
    assert anthropic._client.headers["x-api-key"] == "sk-literal"


def test_local_and_scripted_kinds() -> None:
    local = build_provider("local", ProviderSettings(kind="local", n_ctx=1024), env={})
    assert isinstance(local, LocalProvider)
    scripted = build_provider("demo", ProviderSettings(kind="scripted"), env={})
    assert isinstance(scripted, ScriptedModel) and scripted.remaining == 0
    mine = ScriptedModel([reply("x")])
    assert build_provider("demo", ProviderSettings(kind="scripted"), env={}, scripted=mine) is mine


async def test_build_router_wires_routes_prices_and_keys() -> None:
    with HttpStubServer() as server:
        server.add(
            StubResponse(
                json={
                    "choices": [{"message": {"role": "assistant", "content": "hi"}}],
                    "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0},
                }
            )
        )
        settings = ModelsSettings.model_validate(
            {
                "providers": {
                    "vllm": {
                        "kind": "openai",
                        "base_url": f"{server.url}/v1",
                        "api_key_env": "VLLM_KEY",
                        "prices": {"qwen": [0.5, 1.0]},
                        "rate_limit_rpm": 100,
                    },
                    "demo": {"kind": "scripted"},
                },
                "routes": {"default": ["vllm:qwen", "demo:x"]},
                "retry": {"max_attempts": 2},
                "breaker": {"failure_threshold": 3, "cooldown_seconds": 5},
            }
        )
        router = build_router(
            settings,
            env={"VLLM_KEY": "k1"},
            extra_providers={"demo": ScriptedModel([reply("fallback")])},
        )
        out = await router.complete(
            "default", ModelRequest(model="?", messages=(Message.user("hello"),))
        )
        await router.aclose()
    assert out.message.content == "hi"
    assert out.usage.cost_usd == pytest.approx(0.5)
    assert server.requests[0].headers["authorization"] == "Bearer k1"
    assert router.breaker("vllm").policy.failure_threshold == 3
