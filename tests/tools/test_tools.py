"""Tools and the registry: schemas from a signature, a Pydantic model or a JSON Schema."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, field_validator

from tools import Tool, ToolRegistry, ToolValidationError


def search(query: str, limit: int = 10, *, since: datetime.date | None = None) -> list[str]:
    """Search the notes.

    Finds notes whose text matches.

    Args:
        query: Words to look for.
        limit: How many notes at most.
    """
    return []


class Transfer(BaseModel):
    amount: Annotated[float, Field(gt=0, description="In euros.")]
    to: str

    @field_validator("to")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


def transfer(amount: float, to: str) -> str:
    return f"{amount} to {to}"


TRANSFER_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "to": {"type": "string", "minLength": 2},
        "memo": {"type": "string", "default": ""},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        "via": {"$ref": "#/$defs/Route"},
    },
    "required": ["amount", "to"],
    "additionalProperties": False,
    "$defs": {
        "Route": {
            "type": "object",
            "properties": {"bank": {"type": ["string", "null"]}},
            "required": ["bank"],
        }
    },
}


def transfer_with_memo(amount: float, to: str, memo: str, tags: list | None = None, via=None):
    return amount


# From the signature


def test_the_signature_and_docstring_become_the_schema():
    tool = Tool.from_function(search)

    assert tool.name == "search"
    assert tool.description == "Search the notes.\n\nFinds notes whose text matches."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for."},
            "limit": {"type": "integer", "default": 10, "description": "How many notes at most."},
            "since": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}
            | {"default": None},
        },
        "required": ["query"],
        "additionalProperties": False,
    }


def test_signature_arguments_are_coerced_and_defaults_filled():
    tool = Tool.from_function(search)

    assert tool.coerce({"query": "x", "since": "2026-11-01"}) == {
        "query": "x",
        "limit": 10,
        "since": datetime.date(2026, 11, 1),
    }
    # validate() is the JSON-safe form that is stored, shown, and coerced again later.
    stored = tool.validate({"query": "x", "since": "2026-11-01", "limit": "3"})
    assert stored == {"query": "x", "limit": 3, "since": "2026-11-01"}
    assert tool.coerce(stored)["since"] == datetime.date(2026, 11, 1)


def test_sphinx_and_numpy_docstrings_describe_parameters_too():
    def sphinx(path: str) -> None:
        """Open a file.

        :param path: Where it is.
        """

    def numpy(path: str) -> None:
        """Open a file.

        Parameters
        ----------
        path : str
            Where it is.
        """

    for function in (sphinx, numpy):
        tool = Tool.from_function(function)
        assert tool.description == "Open a file."
        assert tool.parameters["properties"]["path"]["description"] == "Where it is."


@pytest.mark.parametrize("signature", ["*args", "**kwargs", "a, /"])
def test_functions_must_take_named_parameters(signature):
    namespace: dict = {}
    exec(f"def f({signature}): pass", namespace)

    with pytest.raises(TypeError, match="named parameters only"):
        Tool.from_function(namespace["f"])


def test_parameter_names_that_pydantic_models_reserve_are_fine():
    def fetch(json: dict, schema: str = "v1", model_config: int = 0) -> None: ...

    tool = Tool.from_function(fetch)

    assert tool.coerce({"json": {}}) == {"json": {}, "schema": "v1", "model_config": 0}


# From a Pydantic model


def test_a_pydantic_model_gives_the_schema_and_runs_its_validators():
    tool = Tool.from_function(transfer, parameters=Transfer)

    assert tool.parameters["properties"]["amount"] == {
        "description": "In euros.",
        "exclusiveMinimum": 0,
        "title": "Amount",
        "type": "number",
    }
    assert tool.coerce({"amount": "5", "to": "bob"}) == {"amount": 5.0, "to": "BOB"}
    with pytest.raises(ToolValidationError) as invalid:
        tool.coerce({"amount": -1, "to": "bob"})
    assert invalid.value.errors == [
        {"field": "amount", "message": "Input should be greater than 0"}
    ]


# From a JSON Schema


def test_a_json_schema_is_kept_and_its_arguments_are_coerced():
    tool = Tool.from_function(transfer_with_memo, parameters=TRANSFER_SCHEMA)

    assert tool.parameters == TRANSFER_SCHEMA
    assert tool.coerce({"amount": "2.5", "to": "bob", "via": {"bank": None}}) == {
        "amount": 2.5,
        "to": "bob",
        "memo": "",
        "via": {"bank": None},
    }


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({"amount": 0, "to": "bob"}, "amount", "greater than 0"),
        ({"amount": 1, "to": "b"}, "to", "at least 2 characters"),
        ({"amount": 1, "to": "bob", "tags": ["c"]}, "tags.0", "'a' or 'b'"),
        ({"amount": 1, "to": "bob", "tags": ["a", "b", "a"]}, "tags", "at most 2 items"),
        ({"amount": 1, "to": "bob", "via": {}}, "via.bank", "required"),
        ({"amount": 1, "to": "bob", "extra": 1}, "extra", "not an argument"),
    ],
)
def test_a_json_schema_refuses_what_it_does_not_allow(arguments, field, words):
    tool = Tool.from_function(transfer_with_memo, parameters=TRANSFER_SCHEMA)

    with pytest.raises(ToolValidationError) as invalid:
        tool.coerce(arguments)

    assert [error["field"] for error in invalid.value.errors] == [field]
    assert words in invalid.value.errors[0]["message"]


def test_a_json_schema_without_additional_properties_false_lets_extras_through():
    tool = Tool.from_function(
        lambda **kwargs: kwargs,
        name="open",
        parameters={"type": "object", "properties": {"a": {"type": "integer"}}},
    )

    assert tool.coerce({"a": "1", "b": "anything"}) == {"a": 1, "b": "anything"}


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string"}, "type 'object'"),
        ({"type": "object", "properties": {"a": {"allOf": []}}}, "'allOf'"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}, "points nowhere"),
        (
            {
                "type": "object",
                "properties": {"a": {"$ref": "#/$defs/A"}},
                "$defs": {"A": {"type": "array", "items": {"$ref": "#/$defs/A"}}},
            },
            "recursive",
        ),
        ({"type": "object", "properties": {"a": {"enum": [{"x": 1}]}}}, "scalar"),
    ],
)
def test_json_schema_that_cannot_be_enforced_is_refused_at_registration(schema, words):
    with pytest.raises(ValueError, match=words):
        Tool.from_function(lambda **kwargs: None, name="t", parameters=schema)


def test_a_schema_and_a_function_that_cannot_fit_are_refused_at_registration():
    with pytest.raises(TypeError, match=r"schema has \['memo', 'tags', 'via'\], which the"):
        Tool.from_function(transfer, parameters=TRANSFER_SCHEMA)
    with pytest.raises(TypeError, match=r"requires \['to'\]"):
        Tool.from_function(
            transfer, parameters={"type": "object", "properties": {"amount": {"type": "number"}}}
        )


def test_a_tool_built_directly_compiles_its_json_schema():
    tool = Tool(
        name="shout",
        description="Shout.",
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        function=lambda n: "!" * n,
    )

    assert tool.coerce({"n": "3"}) == {"n": 3}
    assert not tool.is_async


# The rest of a tool


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dots.not.allowed"])
def test_tool_names_must_suit_the_model_apis(name):
    with pytest.raises(ValueError, match="tool name"):
        Tool.from_function(search, name=name)


def test_validation_errors_speak_to_the_model():
    tool = Tool.from_function(search)

    with pytest.raises(ToolValidationError) as invalid:
        tool.validate({"limit": "many", "color": "red"})

    assert str(invalid.value) == (
        "Invalid arguments: query: required, but missing; "
        "limit: Input should be a valid integer, unable to parse string as an integer; "
        "color: not an argument of this tool (it takes: query, limit, since)"
    )


def test_a_flood_of_errors_is_summarised():
    tool = Tool.from_function(
        lambda numbers: None,
        name="t",
        parameters={
            "type": "object",
            "properties": {"numbers": {"type": "array", "items": {"type": "integer"}}},
        },
    )

    with pytest.raises(ToolValidationError) as invalid:
        tool.coerce({"numbers": ["x"] * 500})

    assert len(invalid.value.errors) == 20
    assert str(invalid.value).endswith("; and 480 more")


def test_async_callables_are_recognised():
    class Caller:
        async def __call__(self) -> None: ...

    async def coroutine_function() -> None: ...

    assert Tool.from_function(coroutine_function).is_async
    assert Tool.from_function(Caller(), name="caller").is_async
    assert not Tool.from_function(search).is_async


def test_api_formats():
    tool = Tool.from_function(
        search, read_only=True, idempotent=True, description="Search.", tags=("notes",)
    )

    anthropic = tool.to_api_format("anthropic")
    openai = tool.to_api_format("openai")
    mcp = tool.to_api_format("mcp")

    assert anthropic == {
        "name": "search",
        "description": "Search.",
        "input_schema": tool.parameters,
    }
    assert openai == {
        "type": "function",
        "function": {"name": "search", "description": "Search.", "parameters": tool.parameters},
    }
    assert mcp == {
        "name": "search",
        "description": "Search.",
        "inputSchema": tool.parameters,
        "annotations": {
            "readOnlyHint": True,
            "destructiveHint": False,
            "idempotentHint": True,
            "openWorldHint": False,
        },
    }
    anthropic["input_schema"]["properties"].clear()  # a caller's change stays theirs
    assert tool.parameters["properties"]
    with pytest.raises(ValueError, match="unknown provider"):
        tool.to_api_format("gemini")


# The registry


def test_the_registry_registers_with_or_without_options():
    registry = ToolRegistry()

    @registry.register
    def plain(x: int) -> int:
        return x

    @registry.register(
        name="careful",
        description="Careful.",
        requires_confirmation=True,
        timeout=5,
        tags=["fs", "write"],
        destructive=True,
        max_observation_chars=500,
    )
    def anything(x: int) -> int:
        return x

    careful = registry.get("careful")
    assert plain(2) == 2  # the function is returned unchanged
    assert registry.get("plain").requires_confirmation is False
    assert registry.get("plain").timeout_seconds == 30.0
    assert (careful.description, careful.requires_confirmation, careful.timeout_seconds) == (
        "Careful.",
        True,
        5,
    )
    assert (careful.tags, careful.destructive, careful.max_observation_chars) == (
        ("fs", "write"),
        True,
        500,
    )
    assert registry.get("nope") is None
    assert "careful" in registry
    assert len(registry) == 2


def test_duplicate_names_are_refused():
    registry = ToolRegistry()
    registry.register(search)

    with pytest.raises(ValueError, match="already registered"):
        registry.register(name="search")(transfer)


def test_list_tools_and_api_format_in_registration_order():
    registry = ToolRegistry()
    registry.register(tags=["a"])(search)
    registry.register(tags=["b"])(transfer)

    assert [t.name for t in registry.list_tools()] == ["search", "transfer"]
    assert [t.name for t in registry.list_tools(tag="b")] == ["transfer"]
    assert registry.list_tools(tag="z") == []
    assert [t["name"] for t in registry.to_api_format("anthropic")] == ["search", "transfer"]
    assert [t["function"]["name"] for t in registry.to_api_format("openai")] == [
        "search",
        "transfer",
    ]


class Point(BaseModel):
    x: int


def test_literal_and_nested_model_parameters():
    def move(to: Point, mode: Literal["walk", "run"] = "walk") -> str:
        return f"{mode} to {to.x}"

    tool = Tool.from_function(move)

    assert tool.coerce({"to": {"x": "1"}}) == {"to": Point(x=1), "mode": "walk"}
    assert tool.validate({"to": {"x": "1"}, "mode": "run"}) == {"to": {"x": 1}, "mode": "run"}
    assert tool.parameters["properties"]["mode"]["enum"] == ["walk", "run"]
