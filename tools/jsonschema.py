"""Translate a JSON Schema into Python types that Pydantic validates and coerces.

A tool described by a hand-written JSON Schema must hand its function validated, coerced
values just like a tool described by a Pydantic model, so the schema becomes types once, at
registration. The common subset of JSON Schema that tool definitions use is understood;
any other keyword that would constrain values is refused at registration rather than
silently ignored. `oneOf` is checked like `anyOf` (exclusivity is not enforced).
"""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from pydantic import ConfigDict, Field, with_config

# Keywords that describe but never constrain: accepted and left to the schema's readers.
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "format",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentMediaType",
        "contentEncoding",
    }
)
_UNDERSTOOD = _ANNOTATIONS | {
    "$ref",
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
}
_NUMBER_CONSTRAINTS = {
    "minimum": "ge",
    "maximum": "le",
    "exclusiveMinimum": "gt",
    "exclusiveMaximum": "lt",
    "multipleOf": "multiple_of",
}
_STRING_CONSTRAINTS = {"minLength": "min_length", "maxLength": "max_length", "pattern": "pattern"}
_ARRAY_CONSTRAINTS = {"minItems": "min_length", "maxItems": "max_length"}


class UnsupportedSchemaError(ValueError):
    """The schema uses JSON Schema that cannot be turned into a validator."""


def object_type(schema: dict[str, Any], name: str) -> Any:
    """The TypedDict that validates the top-level object of a tool's arguments."""
    if schema.get("type", "object") != "object":
        raise UnsupportedSchemaError("a tool's parameters must be a JSON Schema of type 'object'")
    return _Translator(schema).object(schema, name, "#")


class _Translator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.resolving: set[str] = set()  # $refs being expanded, to refuse recursive schemas

    def type_of(self, schema: Any, path: str) -> Any:
        if schema is True or schema == {}:
            return Any
        if not isinstance(schema, dict):
            raise UnsupportedSchemaError(f"{path}: a schema must be an object, got {schema!r}")
        unknown = sorted(set(schema) - _UNDERSTOOD)
        if unknown:
            raise UnsupportedSchemaError(f"{path}: unsupported JSON Schema keyword {unknown[0]!r}")
        if "$ref" in schema:
            return self.reference(schema["$ref"], path)
        if "enum" in schema:
            return self.literal(schema["enum"], path)
        if "const" in schema:
            return self.literal([schema["const"]], path)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                return _union(
                    [self.type_of(o, f"{path}/{keyword}/{i}") for i, o in enumerate(options)]
                )
        kinds = schema.get("type")
        if kinds is None:
            return self.object(schema, "Object", path) if "properties" in schema else Any
        if isinstance(kinds, str):
            kinds = [kinds]
        return _union([self.single(schema, kind, path) for kind in kinds])

    def single(self, schema: dict[str, Any], kind: str, path: str) -> Any:
        match kind:
            case "string":
                return _constrained(str, schema, _STRING_CONSTRAINTS)
            case "integer":
                return _constrained(int, schema, _NUMBER_CONSTRAINTS)
            case "number":
                return _constrained(float, schema, _NUMBER_CONSTRAINTS)
            case "boolean":
                return bool
            case "null":
                return None
            case "array":
                items = self.type_of(schema.get("items", True), f"{path}/items")
                return _constrained(list[items], schema, _ARRAY_CONSTRAINTS)
            case "object":
                return self.object(schema, schema.get("title", "Object"), path)
        raise UnsupportedSchemaError(f"{path}: unknown type {kind!r}")

    def object(self, schema: dict[str, Any], name: str, path: str) -> Any:
        extra = schema.get("additionalProperties", True)
        properties = schema.get("properties", {})
        if not isinstance(extra, bool):
            if properties:
                raise UnsupportedSchemaError(
                    f"{path}: 'additionalProperties' with a schema beside 'properties' "
                    "is not supported"
                )
            return dict[str, self.type_of(extra, f"{path}/additionalProperties")]
        if not properties and extra:
            return dict[str, Any]
        required = set(schema.get("required", ()))
        fields: dict[str, Any] = {}
        for key, subschema in properties.items():
            field_type = self.type_of(subschema, f"{path}/properties/{key}")
            if key in required:
                fields[key] = field_type
            elif isinstance(subschema, dict) and "default" in subschema:
                default = Field(default=subschema["default"])
                fields[key] = NotRequired[Annotated[field_type, default]]
            else:
                fields[key] = NotRequired[field_type]
        # JSON Schema allows properties it does not name unless it says otherwise.
        config = ConfigDict(extra="allow" if extra else "forbid")
        return with_config(config)(TypedDict(name, fields))

    def reference(self, ref: str, path: str) -> Any:
        prefix = next((p for p in ("#/$defs/", "#/definitions/") if ref.startswith(p)), None)
        if prefix is None:
            raise UnsupportedSchemaError(f"{path}: only local $refs (#/$defs/...) are supported")
        if ref in self.resolving:
            raise UnsupportedSchemaError(f"{path}: recursive $ref {ref!r} is not supported")
        target = self.root.get(prefix[2:-1], {}).get(ref.removeprefix(prefix))
        if target is None:
            raise UnsupportedSchemaError(f"{path}: $ref {ref!r} points nowhere")
        self.resolving.add(ref)
        try:
            return self.type_of(target, ref)
        finally:
            self.resolving.discard(ref)

    def literal(self, values: Any, path: str) -> Any:
        if not isinstance(values, list) or not values:
            raise UnsupportedSchemaError(f"{path}: 'enum' must be a non-empty list")
        if any(isinstance(value, dict | list) for value in values):
            raise UnsupportedSchemaError(f"{path}: only scalar 'enum'/'const' values are supported")
        return Literal[tuple(values)]


def _constrained(base: Any, schema: dict[str, Any], keywords: dict[str, str]) -> Any:
    constraints = {keywords[k]: v for k, v in schema.items() if k in keywords}
    return Annotated[base, Field(**constraints)] if constraints else base


def _union(types: list[Any]) -> Any:
    if Any in types:
        return Any
    return functools.reduce(operator.or_, types)
