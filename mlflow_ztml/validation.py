"""Pydantic validation errors in words a person writing YAML understands.

Pydantic's own messages name Python types ("Input should be a valid dictionary or instance of
Inference"). A manifest author needs the field path as they wrote it and the expected shape in
plain words ("spec.inference: expected a mapping, got a list"). `describe()` is the one place
that turns a `ValidationError` into such lines; it knows the model so it can say what a list
should hold and which fields exist next to an unknown one.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

_EXPECTED = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}

_SINGULAR = {str: "string", float: "number", int: "whole number", bool: "boolean"}


def field_path(loc: Sequence[str | int]) -> str:
    """`("spec", "data_sources", 0, "name")` -> `spec.data_sources[0].name`.

    A key that is not a plain name (a metric called `val.acc`, a label `app.kubernetes.io/x`)
    is written `["val.acc"]` so the path stays unambiguous.
    """
    parts: list[str] = []
    for step in loc:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.match(step):
            parts.append(f".{step}" if parts else step)
        else:
            parts.append(f'["{step}"]')
    return "".join(parts) or "<document>"


def describe(
    exc: ValidationError,
    model: type[BaseModel] | None = None,
    origins: Mapping[Loc, Loc] | None = None,
) -> list[str]:
    """One line per error: `<field path>: <what was expected>, got <what was there>`.

    `model` (the validated class) lets the message name a list's item shape and the known
    fields next to an unknown one. `origins` maps a location in the validated document back to
    where the author wrote the value (a published field that was moved to its canonical place),
    so the path names what the author can find in their file.
    """
    lines: list[str] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        annotation = _annotation_at(model, loc) if model is not None else None
        where = field_path(_origin(loc, origins or {}))
        lines.append(f"{where}: {_message(error, annotation, model, loc)}")
    return lines


def _origin(loc: Loc, origins: Mapping[Loc, Loc]) -> Loc:
    for size in range(len(loc), 0, -1):
        moved = origins.get(loc[:size])
        if moved is not None:
            return moved + loc[size:]
    return loc


def _message(error: Any, annotation: Any, model: type[BaseModel] | None, loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        known = _known_fields(model, loc[:-1]) if model is not None else []
        return f"unknown field (known: {', '.join(known)})" if known else "unknown field"
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if kind == "list_type" and annotation is not None:
            expected = _list_words(annotation) or expected
        hint = _score_hint(model, loc) if model is not None and expected == "a number" else ""
        return f"expected {expected}, got {describe_value(error.get('input'))}{hint}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {describe_value(error.get('input'))}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("greater than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }[kind]
        return f"must be {bound[0]} {ctx.get(bound[1])}, got {describe_value(error.get('input'))}"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def describe_value(value: Any) -> str:
    """A value as an error message shows it: `the string 'high'`, `true`, `a list`, `3`."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, int | float):
        return str(value)
    return f"a {type(value).__name__} value"


def _strip(annotation: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` -> X (the shape a person writes)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _annotation_at(model: type[BaseModel] | None, loc: Loc) -> Any:
    """The declared type at `loc` inside `model`, or None when the path leaves the schema."""
    current: Any = model
    for step in loc:
        current = _strip(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = _field(current, step)
            if field is None:
                current = _extra_items(current)
                if current is None:
                    return None
            else:
                current = field.annotation
        elif origin is list and isinstance(step, int):
            current = typing.get_args(current)[0]
        elif origin is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    return current


def _field(model: type[BaseModel], step: str | int) -> Any:
    for name, field in model.model_fields.items():
        if step == (field.alias or name):
            return field
    return None


def _extra_items(model: type[BaseModel]) -> Any:
    """The declared type of a model's free-named fields, None when it allows none."""
    if model.model_config.get("extra") != "allow":
        return None
    extra = typing.get_type_hints(model, include_extras=True).get("__pydantic_extra__")
    return typing.get_args(_strip(extra))[1] if extra is not None else Any


def _known_fields(model: type[BaseModel] | None, loc: Loc) -> list[str]:
    parent = _strip(_annotation_at(model, loc))
    if isinstance(parent, type) and issubclass(parent, BaseModel):
        return [field.alias or name for name, field in parent.model_fields.items()]
    return []


def _score_hint(model: type[BaseModel], loc: Loc) -> str:
    """A free-named field of a scores section (fairness, drift) must be a number; say which
    named fields exist there, since a misspelt one (`evalution_date`) lands here."""
    parent = _strip(_annotation_at(model, loc[:-1]))
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return ""
    if _extra_items(parent) is None or _field(parent, loc[-1]):
        return ""
    named = ", ".join(field.alias or name for name, field in parent.model_fields.items())
    return f" (scores here are numbers; the other fields are {named})"


def _list_words(annotation: Any) -> str | None:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) is not list:
        return None
    item = _strip(typing.get_args(annotation)[0])
    if isinstance(item, type) and issubclass(item, BaseModel):
        words = getattr(item, "__shape_words__", None)
        return f"a list of {words or 'mappings'}"
    if item in _SINGULAR:
        return f"a list of {_SINGULAR[item]}s"
    return None
