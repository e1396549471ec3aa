"""The arguments a tool takes: a JSON Schema for the model and a validator built once.

Whatever the schema's source (a function's signature, a Pydantic model, a JSON Schema),
the validator is compiled at registration, so a call costs one pydantic-core validation.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import ErrorDetails

from tools.jsonschema import object_type

# A model that sends thousands of bad items needs the first few errors, not all of them.
MAX_REPORTED_ERRORS = 20

_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


class FieldError(TypedDict):
    field: str  # dotted path of the argument ("" for the arguments as a whole)
    message: str


class ToolValidationError(ValueError):
    """Arguments that a tool's schema refuses; `errors` says what is wrong, field by field."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.errors: list[FieldError] = list(errors)

    @classmethod
    def from_errors(cls, errors: Sequence[FieldError], total: int = 0) -> ToolValidationError:
        """`total` counts the errors found when only the first few are given."""
        text = "; ".join(f"{error['field'] or 'arguments'}: {error['message']}" for error in errors)
        if total > len(errors):
            text += f"; and {total - len(errors)} more"
        return cls(f"Invalid arguments: {text}", errors)


class _UntitledJsonSchema(GenerateJsonSchema):
    """Pydantic titles every property after its name; for a model they are only noise."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class ArgumentSchema:
    """A tool's JSON Schema and the validator that turns raw arguments into keyword arguments."""

    __slots__ = ("_adapter", "_as_kwargs", "_validate", "json_schema", "names")

    def __init__(
        self,
        adapter: TypeAdapter[Any],
        json_schema: dict[str, Any],
        names: Sequence[str],
        *,
        as_kwargs: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        self._adapter = adapter
        # The compiled validator itself: TypeAdapter.validate_python adds a layer per call.
        self._validate = adapter.validator.validate_python
        self._as_kwargs = as_kwargs  # None: the validated value already is the kwargs dict
        self.json_schema = json_schema
        self.names = tuple(names)  # the keyword arguments the function may receive

    @classmethod
    def from_signature(
        cls, function: Callable[..., Any], descriptions: Mapping[str, str]
    ) -> ArgumentSchema:
        """From the function's parameters, their type hints, defaults and descriptions."""
        try:
            signature = inspect.signature(function, eval_str=True)
        except (TypeError, ValueError, NameError) as error:
            raise TypeError(
                f"cannot read the signature of {function!r} ({error}); pass parameters="
            ) from error
        fields: dict[str, Any] = {}
        for parameter in signature.parameters.values():
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                raise TypeError(
                    f"{function!r}: tool functions take named parameters only, "
                    f"and {parameter} is not one; pass parameters= to describe them"
                )
            hint = Any if parameter.annotation is parameter.empty else parameter.annotation
            description = descriptions.get(parameter.name)
            if parameter.default is parameter.empty:
                fields[parameter.name] = Annotated[hint, Field(description=description)]
            else:
                field = Field(default=parameter.default, description=description)
                fields[parameter.name] = NotRequired[Annotated[hint, field]]
        typed_dict = with_config(ConfigDict(extra="forbid"))(TypedDict("Arguments", fields))
        adapter = TypeAdapter(typed_dict)
        schema = adapter.json_schema(schema_generator=_UntitledJsonSchema)
        schema.pop("title", None)
        return cls(adapter, schema, list(fields))

    @classmethod
    def from_model(cls, model: type[BaseModel]) -> ArgumentSchema:
        """From a Pydantic model: its validators run, and its fields become the kwargs."""
        schema = model.model_json_schema()
        schema.pop("title", None)
        return cls(TypeAdapter(model), schema, list(model.model_fields), as_kwargs=dict)

    @classmethod
    def from_json_schema(cls, schema: dict[str, Any]) -> ArgumentSchema:
        """From a JSON Schema object, translated once into types (see tools.jsonschema)."""
        schema = copy.deepcopy(schema)  # the caller's dict stays theirs to change
        adapter = TypeAdapter(object_type(schema, "Arguments"))
        return cls(adapter, schema, list(schema.get("properties", {})))

    def coerce(self, arguments: object) -> dict[str, Any]:
        """The validated, coerced keyword arguments for the function, or ToolValidationError."""
        value = self._check(arguments)
        return value if self._as_kwargs is None else self._as_kwargs(value)

    def validate(self, arguments: object) -> dict[str, Any]:
        """The validated arguments as JSON-safe values, defaults filled in.

        This is what gets stored and shown to an approver; coercing it again gives the
        same keyword arguments.
        """
        return self._adapter.dump_python(self._check(arguments), mode="json", by_alias=True)

    def _check(self, arguments: object) -> Any:
        if not isinstance(arguments, dict):
            kind = _JSON_TYPES.get(type(arguments), type(arguments).__name__)
            message = f"the arguments must be a JSON object, not {kind}"
            raise ToolValidationError.from_errors([{"field": "", "message": message}])
        try:
            return self._validate(arguments)
        except ValidationError as error:
            details = error.errors(include_url=False, include_context=False, include_input=False)
            shown = [self._field_error(detail) for detail in details[:MAX_REPORTED_ERRORS]]
            raise ToolValidationError.from_errors(shown, total=len(details)) from None

    def _field_error(self, detail: ErrorDetails) -> FieldError:
        location = detail["loc"]
        if detail["type"] == "missing":
            message = "required, but missing"
        elif detail["type"] == "extra_forbidden" and len(location) == 1:
            takes = ", ".join(self.names) or "none"
            message = f"not an argument of this tool (it takes: {takes})"
        else:
            message = detail["msg"]
        return {"field": ".".join(map(str, location)), "message": message}
