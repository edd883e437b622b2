"""The model protocol's data: messages, tool calls, tool schemas, requests, responses, usage.

Owns: the provider-neutral shapes every model provider maps to and from its wire format.
Does not own: any wire format (that is each provider's job) or any I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
JsonObject = dict[str, Any]


class ToolCall(BaseModel):
    """A tool call the model asked for. ``parse_error`` is set when its arguments were not JSON."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: JsonObject = Field(default_factory=dict)
    raw_arguments: str | None = None
    parse_error: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=text)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", content=text)

    @classmethod
    def assistant(cls, text: str | None = None, tool_calls: tuple[ToolCall, ...] = ()) -> Message:
        return cls(role="assistant", content=text, tool_calls=tool_calls)

    @classmethod
    def tool(cls, call_id: str, name: str, text: str) -> Message:
        return cls(role="tool", content=text, tool_call_id=call_id, name=name)


class ToolSchema(BaseModel):
    """What the model sees of a tool: its name, description and JSON-schema parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: JsonObject = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ResponseFormat(BaseModel):
    """Ask the model for JSON matching ``json_schema`` (structured output)."""

    model_config = ConfigDict(frozen=True)

    name: str = "output"
    json_schema: JsonObject


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 8),
        )


ToolChoice = Literal["auto", "required", "none"]


class ModelRequest(BaseModel):
    """One completion request. ``model`` is the provider-local model name (after the colon)."""

    model_config = ConfigDict(frozen=True)

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSchema, ...] = ()
    tool_choice: ToolChoice | str = "auto"
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    # Where the call comes from; providers may forward it (e.g. as an idempotency header).
    metadata: dict[str, str] = Field(default_factory=dict)


FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


class ModelResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    message: Message
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    finish_reason: FinishReason = "stop"
