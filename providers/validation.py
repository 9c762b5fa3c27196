"""Pydantic validation errors as llmspell's one-line :class:`InvalidRequest` messages.

Everything a person or a client sends (protocol requests, ``Agent(...)`` keywords, ``%%llm``
flags) is validated by pydantic models; this module is the single place where their errors
become text. A message names where the problem is (``generate: option 'top_p'``,
``generate: messages[0]: 'role'``), what was wrong, and what was given::

    generate: option 'top_p' must be > 0 and <= 1, not 5
    Agent: unknown options 'max_token', 'temprature' (valid: temperature, top_p, ...)
    info: field 'model' must be a string, not a number
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from .errors import InvalidRequest

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dataclass_type": "an object",
    "dataclass_exact_type": "an object",
}
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")

Locate = Callable[[tuple[int | str, ...]], str]
"""Names a location of an error (``('options', 'top_p')`` → ``option 'top_p'``)."""


def json_type(value: Any) -> str:
    """What ``value`` is, in JSON's words (``a number``, ``an object``, ``null``...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def bound_text(info: FieldInfo) -> str:
    """A field's numeric range as text: ``> 0 and <= 1``."""
    # pydantic keeps each bound as an annotated_types object (Gt, Ge, Lt, Le) with that name.
    symbols = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
    parts = [
        f"{symbol} {getattr(item, name)}"
        for item in info.metadata
        for name, symbol in symbols
        if getattr(item, name, None) is not None
    ]
    return " and ".join(parts)


Unknown = Callable[[tuple[int | str, ...]], tuple[str, Sequence[str]]]
"""For the parent location of unknown names: how to call them (``option``, ``field of
messages[0]``) and the names that are accepted there."""


def invalid_request(
    exc: ValidationError,
    *,
    prefix: str,
    locate: Locate,
    unknown: Unknown,
    fields: Mapping[str, FieldInfo] | None = None,
) -> InvalidRequest:
    """The :class:`InvalidRequest` for the first problem of ``exc``.

    Unknown names in one place are reported together (``unknown fields 'a', 'b' (accepted:
    ...)``); every other problem alone, the first one pydantic found. ``fields`` describe the
    numeric ranges; ``prefix`` names who is asking (``generate``, ``Agent``).
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] in _UNKNOWN:
        parent = tuple(first["loc"][:-1])
        names = sorted(
            str(e["loc"][-1])
            for e in errors
            if e["type"] in _UNKNOWN and tuple(e["loc"][:-1]) == parent
        )
        noun, accepted = unknown(parent)
        plural = "s" if len(names) > 1 else ""
        listed = ", ".join(accepted) or "none"
        quoted = ", ".join(repr(name) for name in names)
        where = noun.split(" ", 1)
        tail = f" {where[1]}" if len(where) > 1 else ""
        return InvalidRequest(
            f"{prefix}: unknown {where[0]}{plural} {quoted}{tail} (accepted: {listed})"
        )
    return InvalidRequest(f"{prefix}: {describe(first, locate, fields or {})}".rstrip())


def describe(error: Mapping[str, Any], locate: Locate, fields: Mapping[str, FieldInfo]) -> str:
    """One pydantic error as ``<where> <what was wrong>``."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    where = locate(loc)
    if kind == "missing":
        return f"missing required {where}"
    if kind in _UNKNOWN:
        return f"unknown {where}"
    if kind in _TYPE_WORDS:
        return f"{where} must be {_TYPE_WORDS[kind]}, not {json_type(value)}"
    if kind in _BOUNDS:
        info = fields.get(str(loc[-1])) if loc else None
        bound = bound_text(info) if info is not None else ""
        if not bound:
            bound = str(error["msg"]).removeprefix("Input should be ")
        return f"{where} must be {bound}, not {value!r}"
    if kind == "finite_number":
        return f"{where} must be a finite number, not {value!r}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx.get('expected')}, not {value!r}"
    if kind in ("string_too_short", "too_short"):
        return f"{where} must not be empty"
    if kind == "value_error":
        return f"{where} {ctx.get('error')}".strip()
    return f"{where}: {error['msg']}"
