"""A tool: a callable, the schema of its arguments, and what an operator should know of it."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field
from typing import Any, TypedDict, Unpack

import docstring_parser
from pydantic import BaseModel

from tools.arguments import ArgumentSchema
from tools.results import DEFAULT_MAX_OBSERVATION_CHARS

DEFAULT_TIMEOUT = 30.0
PROVIDERS = ("anthropic", "openai", "mcp")

# What both Anthropic and OpenAI accept as a tool name.
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

Preview = Callable[[dict[str, Any]], str | None]


class ToolHints(TypedDict, total=False):
    """Options beyond the contract's, as `ToolRegistry.register` accepts them."""

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool
    max_observation_chars: int
    preview: Preview | None


class ToolOptions(ToolHints, total=False):
    requires_confirmation: bool
    timeout_seconds: float | None
    tags: tuple[str, ...]


@dataclass(slots=True, kw_only=True, eq=False)
class Tool:
    """One tool. Build it with `Tool.from_function` (or `ToolRegistry.register`) to derive
    the schema; constructed directly, `parameters` must be a JSON Schema object.

    `read_only`, `destructive`, `idempotent` and `open_world` are hints as in MCP's tool
    annotations. `preview`, given validated arguments, describes what a call would do
    before it runs (write_file returns a diff) for the operator who approves it.
    """

    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments
    function: Callable[..., Any]
    requires_confirmation: bool = False
    timeout_seconds: float | None = DEFAULT_TIMEOUT  # None: the executor's default_timeout
    tags: tuple[str, ...] = ()
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False
    max_observation_chars: int = DEFAULT_MAX_OBSERVATION_CHARS
    preview: Preview | None = None
    arguments: InitVar[ArgumentSchema | None] = None  # derived from `parameters` when None
    is_async: bool = field(init=False)
    _arguments: ArgumentSchema = field(init=False, repr=False)

    def __post_init__(self, arguments: ArgumentSchema | None) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-' "
                "(what model APIs accept)"
            )
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ValueError(f"{self.name}: timeout_seconds must be positive or None")
        if self.max_observation_chars < 1:
            raise ValueError(f"{self.name}: max_observation_chars must be positive")
        self.tags = tuple(self.tags)
        self._arguments = arguments or ArgumentSchema.from_json_schema(self.parameters)
        _check_function_takes(self.name, self.function, self._arguments.names)
        # An object whose __call__ is `async def` is as asynchronous as a coroutine function.
        self.is_async = inspect.iscoroutinefunction(self.function) or inspect.iscoroutinefunction(
            type(self.function).__call__
        )

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | type[BaseModel] | None = None,
        **options: Unpack[ToolOptions],
    ) -> Tool:
        """A tool for `function`; the schema comes from `parameters` (a JSON Schema or a
        Pydantic model) or else from the signature, the docstring describing each parameter.
        """
        doc = _parse_docstring(function)
        if parameters is None:
            described = {p.arg_name: p.description for p in doc.params if p.description}
            arguments = ArgumentSchema.from_signature(function, described)
        elif isinstance(parameters, dict):
            arguments = ArgumentSchema.from_json_schema(parameters)
        elif isinstance(parameters, type) and issubclass(parameters, BaseModel):
            arguments = ArgumentSchema.from_model(parameters)
        else:
            raise TypeError(
                "parameters must be None, a JSON Schema dict or a Pydantic model class, "
                f"not {parameters!r}"
            )
        if description is None:
            description = "\n\n".join(filter(None, (doc.short_description, doc.long_description)))
        return cls(
            name=getattr(function, "__name__", "") if name is None else name,
            description=description,
            parameters=arguments.json_schema,
            function=function,
            arguments=arguments,
            **options,
        )

    def coerce(self, arguments: object) -> dict[str, Any]:
        """The validated, coerced keyword arguments the function receives.

        Raises tools.ToolValidationError.
        """
        return self._arguments.coerce(arguments)

    def validate(self, arguments: object) -> dict[str, Any]:
        """The validated, coerced arguments as JSON-safe values, defaults filled in: what
        to store and show an approver, and to pass to `ToolExecutor.execute` later.

        Raises tools.ToolValidationError, whose `errors` lists the problems field by field.
        """
        return self._arguments.validate(arguments)

    def to_api_format(self, provider: str) -> dict[str, Any]:
        """The tool's definition for "anthropic", "openai" (Chat Completions) or "mcp"."""
        schema = copy.deepcopy(self.parameters)  # callers may adapt it; ours stays intact
        match provider:
            case "anthropic":
                return {"name": self.name, "description": self.description, "input_schema": schema}
            case "openai":
                return {
                    "type": "function",
                    "function": {
                        "name": self.name,
                        "description": self.description,
                        "parameters": schema,
                    },
                }
            case "mcp":
                return {
                    "name": self.name,
                    "description": self.description,
                    "inputSchema": schema,
                    "annotations": {
                        "readOnlyHint": self.read_only,
                        "destructiveHint": self.destructive,
                        "idempotentHint": self.idempotent,
                        "openWorldHint": self.open_world,
                    },
                }
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")


def _parse_docstring(function: Callable[..., Any]) -> docstring_parser.Docstring:
    text = inspect.getdoc(function) or ""
    try:
        return docstring_parser.parse(text)
    except docstring_parser.ParseError:  # an unusual docstring still describes the tool
        fallback = docstring_parser.Docstring()
        fallback.short_description = text
        return fallback


def _check_function_takes(tool: str, function: Callable[..., Any], names: Iterable[str]) -> None:
    """Refuse at registration a schema and a function that could never fit together."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    by_keyword = {
        p.name: p
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    names = set(names)
    unknown = sorted(names - set(by_keyword))
    if unknown:
        raise TypeError(f"{tool}: the schema has {unknown}, which the function does not take")
    missing = sorted(n for n, p in by_keyword.items() if p.default is p.empty and n not in names)
    if missing:
        raise TypeError(f"{tool}: the function requires {missing}, which the schema lacks")
