"""Schemas as notebook code gives them: a JSON Schema (a dict), ``"json"``, or a pydantic model
class; and the value of an answer given for one (the parsed JSON, or an instance of the class).

The answer itself was checked against the schema before it got here (the provider manager
checks every ``format`` answer: :mod:`providers.structured`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from providers import InvalidRequest
from providers.structured import OutputFormat

Reader = Callable[[Any], Any]


def output_format(schema: Any, what: str) -> tuple[OutputFormat, Reader]:
    """The ``format`` option for ``schema`` and how to read an answer's parsed JSON;
    :class:`InvalidRequest` naming ``what`` for anything else."""
    if schema == "json":
        return "json", _same
    if isinstance(schema, Mapping):
        return dict(schema), _same
    from pydantic import BaseModel

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema(), schema.model_validate
    raise InvalidRequest(
        f"{what}: schema must be a JSON Schema (a dict), 'json' or a pydantic model class,"
        f" not {type(schema).__name__}"
    )


def read_answer(text: str, reader: Reader) -> Any:
    """The value of an answer's ``text``."""
    return reader(json.loads(text))


def _same(value: Any) -> Any:
    return value
