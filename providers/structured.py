"""Structured output: the ``format`` generation option, checked once, and the check of what a
model answered against it.

``format`` is ``"json"`` (a JSON object, as Ollama's ``format: "json"`` and OpenAI's
``json_object`` give) or a JSON Schema (an object; ``{}`` admits any JSON value).
:func:`check_format` is the one check of it (the options validator calls it): a schema that is
not valid JSON Schema is refused with the place and the reason. Each backend constrains its
model as it can (llamacpp with a grammar, Ollama's ``format``, an OpenAI endpoint's
``response_format``); whatever the backend, :func:`checked` (applied by the provider manager to
every generation) parses the text when the stream ends and validates it against the schema, so
a reply is never half a document or a value the schema refuses: an answer cut by
``max_tokens`` says so, one that does not parse or does not match says where.

``jsonschema`` is imported only when a schema is used.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .errors import GenerationError

if TYPE_CHECKING:
    from .options import GenerationOptions
    from .types import Chunk, ChunkStream

OutputFormat = Literal["json"] | dict[str, Any]
"""``"json"`` or a JSON Schema."""


def check_format(value: Any) -> OutputFormat:
    """``value`` as a ``format``; raises :class:`ValueError` saying what is wrong with it."""
    if value == "json":
        return "json"
    if isinstance(value, str):
        raise ValueError(f"must be 'json' or a JSON Schema object, not {value!r}")
    if not isinstance(value, Mapping):
        raise ValueError(f"must be 'json' or a JSON Schema object, not {type(value).__name__}")
    schema = dict(value)
    try:
        json.dumps(schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"is not a JSON object: {exc}") from None
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"is not a valid JSON Schema: {_error_text(exc)}") from None
    return schema


JSON_OBJECT: dict[str, Any] = {"type": "object"}
"""What ``"json"`` asks for."""


def schema_of(output: OutputFormat) -> dict[str, Any]:
    """The schema an answer of ``output`` satisfies."""
    return JSON_OBJECT if isinstance(output, str) else output


def parse_output(text: str, output: OutputFormat, chunk: Chunk, model: str) -> Any:
    """The value of ``text``, the whole answer of a generation whose last chunk is ``chunk``;
    :class:`GenerationError` when it was cut, does not parse or does not match the schema."""
    metrics = chunk.metrics
    reason = metrics.stop_reason if metrics else None
    if reason == "length":
        tokens = metrics.generated_tokens if metrics else 0
        raise GenerationError(
            f"{model}: the JSON answer was cut by max_tokens after {tokens} tokens: raise"
            " max_tokens (--max-tokens) for a complete answer",
            model=model,
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise GenerationError(
            f"{model}: the answer is not valid JSON ({exc.msg} at character {exc.pos}): {shown!r}",
            model=model,
        ) from None
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for

    schema = schema_of(output)
    try:
        validator_for(schema)(schema).validate(value)
    except ValidationError as exc:
        raise GenerationError(
            f"{model}: the answer does not match the schema: {_error_text(exc)}", model=model
        ) from None
    return value


def checked(stream: ChunkStream, options: GenerationOptions, model: str) -> ChunkStream:
    """``stream`` as a backend's ``chat`` or ``complete`` returned it, with its answer checked
    against ``options.format`` when one is set: what every caller of a backend's generation
    (the provider manager, the kernel's ``generate``) returns."""
    if options.format is None:
        return stream
    return _checked(stream, options.format, model)


def _checked(stream: ChunkStream, output: OutputFormat, model: str) -> Generator[Chunk, None, None]:
    """``stream``'s chunks; before its last one, the whole text is checked by
    :func:`parse_output` (which raises instead of letting a bad answer end as ok)."""
    parts: list[str] = []
    try:
        for chunk in stream:
            if chunk.done:
                parts.append(chunk.text)
                parse_output("".join(parts), output, chunk, model)
            elif chunk.text:
                parts.append(chunk.text)
            yield chunk
    finally:
        stream.close()


def _error_text(exc: Any) -> str:
    """A jsonschema error as one line: the message and where (``at population``)."""
    path = "/".join(str(part) for part in exc.absolute_path)
    message = str(exc.message)
    if len(message) > 200:
        message = message[:197] + "..."
    return f"{message} (at {path})" if path else message
