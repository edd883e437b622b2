"""The tool registry: tools by name. Owns lookup and listing; nothing about running them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from bastion.core.errors import ToolDefinitionError, ToolNotFound
from bastion.core.messages import ToolSchema
from bastion.tools._tool import Tool


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, tool: Tool) -> Tool:
        if not isinstance(tool, Tool):
            raise ToolDefinitionError(
                f"{tool!r} is not a Tool", hint="Decorate the function with @tool first."
            )
        existing = self._tools.get(tool.name)
        if existing is not None and existing is not tool:
            raise ToolDefinitionError(f"a different tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolNotFound(f"no tool named {name!r}", available=sorted(self._tools)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def schemas(self, names: Iterable[str] | None = None) -> list[ToolSchema]:
        chosen = self.names() if names is None else list(names)
        return [self.get(n).schema() for n in chosen]
