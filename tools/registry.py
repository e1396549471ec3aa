"""The set of tools an agent may call, each under a unique name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Unpack, overload

from pydantic import BaseModel

from tools.tool import DEFAULT_TIMEOUT, Tool, ToolHints


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> Tool:
        """Register a tool built elsewhere; a second tool of the same name is an error."""
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    @overload
    def register[F: Callable[..., Any]](self, function: F, /) -> F: ...
    @overload
    def register[F: Callable[..., Any]](
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | type[BaseModel] | None = None,
        requires_confirmation: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        tags: Iterable[str] | None = None,
        **hints: Unpack[ToolHints],
    ) -> Callable[[F], F]: ...
    def register[F: Callable[..., Any]](
        self,
        function: F | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | type[BaseModel] | None = None,
        requires_confirmation: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        tags: Iterable[str] | None = None,
        **hints: Unpack[ToolHints],
    ) -> F | Callable[[F], F]:
        """Register a function as a tool, as `@registry.register` or `@registry.register(...)`.

        The schema comes from `parameters` (a JSON Schema dict or a Pydantic model class)
        or else from the signature and docstring. The function is returned unchanged.
        """

        def decorate(function: F) -> F:
            self.add(
                Tool.from_function(
                    function,
                    name=name,
                    description=description,
                    parameters=parameters,
                    requires_confirmation=requires_confirmation,
                    timeout_seconds=timeout,
                    tags=tuple(tags or ()),
                    **hints,
                )
            )
            return function

        return decorate if function is None else decorate(function)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def list_tools(self, tag: str | None = None) -> list[Tool]:
        """Every tool in registration order, or those carrying `tag`."""
        return [tool for tool in self._tools.values() if tag is None or tag in tool.tags]

    def to_api_format(self, provider: str) -> list[dict[str, Any]]:
        """Every tool's definition for "anthropic", "openai" or "mcp"."""
        return [tool.to_api_format(provider) for tool in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)
