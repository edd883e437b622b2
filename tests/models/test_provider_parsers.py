"""Property tests: whatever JSON a provider sends, decoding returns a response or raises
``ProviderResponseInvalid`` (never a KeyError, TypeError or pydantic error)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.errors import ProviderResponseInvalid
from bastion.core.messages import ModelResponse
from bastion.models import _anthropic, _openai

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
tool_call = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {}, optional={"name": json_values | st.text(min_size=1), "arguments": json_values}
        ),
    },
)
openai_bodies = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "message": st.fixed_dictionaries(
                        {},
                        optional={
                            "content": json_values,
                            "tool_calls": st.lists(tool_call, max_size=2) | json_values,
                        },
                    )
                    | json_values,
                    "finish_reason": json_values,
                },
            )
            | json_values,
            max_size=2,
        )
        | json_values,
        "usage": st.fixed_dictionaries(
            {}, optional={"prompt_tokens": json_values, "completion_tokens": json_values}
        )
        | json_values,
        "model": json_values,
    },
)
block = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["text", "tool_use", "thinking"]) | json_values,
        "text": json_values,
        "id": json_values | st.text(min_size=1),
        "name": json_values | st.text(min_size=1),
        "input": json_values,
    },
)
anthropic_bodies = st.fixed_dictionaries(
    {},
    optional={
        "content": st.lists(block | json_values, max_size=3) | json_values,
        "stop_reason": json_values,
        "usage": st.fixed_dictionaries(
            {}, optional={"input_tokens": json_values, "output_tokens": json_values}
        )
        | json_values,
        "model": json_values,
    },
)


def decodes_or_is_invalid(decode: Any, body: dict[str, Any]) -> None:
    try:
        out = decode(body)
    except ProviderResponseInvalid:
        return
    assert isinstance(out, ModelResponse)
    for call in out.message.tool_calls:
        assert isinstance(call.arguments, dict)
        assert call.parse_error is None or call.arguments == {}


@settings(max_examples=300, deadline=None)
@given(openai_bodies)
def test_openai_decoding_is_total(body: dict[str, Any]) -> None:
    decodes_or_is_invalid(
        lambda b: _openai.decode_response("openai", b, model="m", prices={"m": (1.0, 1.0)}), body
    )


@settings(max_examples=300, deadline=None)
@given(anthropic_bodies, st.sampled_from([None, "output"]))
def test_anthropic_decoding_is_total(body: dict[str, Any], output_tool: str | None) -> None:
    decodes_or_is_invalid(
        lambda b: _anthropic.decode_response(
            "anthropic", b, model="m", output_tool=output_tool, prices={}
        ),
        body,
    )
