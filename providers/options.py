"""Generation options and chat messages, each defined and validated once.

:class:`GenerationOptions` and :class:`Message` are pydantic dataclasses: whatever builds one —
the kernel from a ``model_request``, ``Agent(temperature=...)``, a ``%%llm`` flag, a backend's
test — gets the same checks (types, ranges, finite numbers, non-empty stop strings) and, through
:func:`generation_options`, the same message naming the option. A backend can therefore trust
the options it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from .errors import InvalidRequest
from .structured import OutputFormat, check_format
from .validation import invalid_request

Role = Literal["system", "user", "assistant"]
Overflow = Literal["error", "truncate"]

MAX_CONTEXT = 1 << 24
"""The largest ``num_ctx`` any request may ask for (16,777,216 tokens): beyond every model's
context, and small enough that a typo cannot ask llama.cpp for terabytes."""
MAX_SEED = (1 << 32) - 1
"""llama.cpp seeds are 32-bit unsigned integers."""

# Strict types field by field (not a strict config, which would refuse a dict for a whole
# dataclass): no "1" for 1, no true for 1, no 1 for true.
_CONFIG = ConfigDict(extra="forbid")


@dataclass(frozen=True, config=_CONFIG)
class Message:
    """One chat message."""

    role: Role
    content: StrictStr

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, config=_CONFIG)
class GenerationOptions:
    """Sampling and length options. ``None`` means "the backend's default"."""

    temperature: StrictFloat | None = Field(default=None, ge=0, allow_inf_nan=False)
    top_p: StrictFloat | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    top_k: StrictInt | None = Field(default=None, ge=0)
    min_p: StrictFloat | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    repeat_penalty: StrictFloat | None = Field(default=None, gt=0, allow_inf_nan=False)
    frequency_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    """OpenAI's: lowers a token's odds by how often it already appeared (-2 to 2)."""
    presence_penalty: StrictFloat | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    """OpenAI's: lowers the odds of every token that already appeared (-2 to 2)."""
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stop: tuple[str, ...] = ()
    """Strings that end the generation (a single string is one stop string)."""
    num_ctx: StrictInt | None = Field(default=None, ge=1, le=MAX_CONTEXT)
    overflow: Overflow | None = None
    """A conversation (``messages``) longer than the context: ``error`` (the default of a
    ``generate`` request) refuses it; ``truncate`` (the default of ``Agent`` and ``llmspell
    chat``) leaves out its oldest turns after the system prompt, and ``dropped_messages`` in
    the metrics says how many (llamacpp; Ollama truncates on its own side)."""
    format: OutputFormat | None = None
    """Structured output: ``"json"`` (the answer is a JSON object) or a JSON Schema (an
    object) the answer satisfies; the answer is checked before the reply (see
    :mod:`providers.structured`)."""

    @field_validator(
        "format", mode="plain", json_schema_input_type=Literal["json"] | dict[str, Any] | None
    )
    @classmethod
    def _output_format(cls, value: Any) -> OutputFormat | None:
        return None if value is None else check_format(value)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, value: Any) -> tuple[str, ...]:
        stops = (value,) if isinstance(value, str) else value
        if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
            raise ValueError(f"must be a string or a list of strings, not {value!r}")
        if not all(stops):
            raise ValueError(f"must not hold an empty string (it would stop at once): {value!r}")
        return tuple(stops)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in OPTION_NAMES} | {"stop": list(self.stop)}


OPTION_FIELDS: dict[str, FieldInfo] = GenerationOptions.__pydantic_fields__  # type: ignore[attr-defined]
"""Every generation option's field (type, default, range), in the documented order."""
OPTION_NAMES: tuple[str, ...] = tuple(OPTION_FIELDS)


CONVERSATION_DEFAULTS = GenerationOptions(overflow="truncate")
"""What a conversation (``Agent``, ``llmspell chat``) leaves unset gets: a conversation that
outgrows the context goes on without its oldest turns, as Ollama's does."""


def with_defaults(options: GenerationOptions, *defaults: GenerationOptions) -> GenerationOptions:
    """``options`` with every option it leaves unset (``None``; no stop strings) taken from the
    first of ``defaults`` that sets it.

    The one rule by which defaults apply: a request's own options win over the config's
    ``[generation]`` table (:meth:`providers.ProviderManager.generation_options`), which wins
    over a backend's built-in defaults (the llamacpp backend's are Ollama's).
    """
    values: dict[str, Any] = {}
    for name in OPTION_NAMES:
        for layer in (options, *defaults):
            value = getattr(layer, name)
            if value is not None and value != ():
                values[name] = value
                break
    return GenerationOptions(**values)


def option_location(loc: tuple[int | str, ...]) -> str:
    """``('options', 'top_p')`` or ``('top_p',)`` → ``option 'top_p'``."""
    names = [part for part in loc if isinstance(part, str) and part != "options"]
    return f"option {names[0]!r}" if names else "options"


def generation_options(values: Mapping[str, Any], *, what: str) -> GenerationOptions:
    """Check ``values`` and build :class:`GenerationOptions`; ``None`` values mean "default".

    Raises :class:`InvalidRequest` naming every unknown option, or the first option whose
    value has the wrong type or is out of range; ``what`` names the caller (``Agent``).
    """
    if not isinstance(values, Mapping):
        raise InvalidRequest(f"{what}: options must be an object, not {type(values).__name__}")
    given = {str(name): value for name, value in values.items() if value is not None}
    try:
        return GenerationOptions(**given)
    except ValidationError as exc:
        raise options_error(exc, what) from None


def options_error(exc: ValidationError, what: str) -> InvalidRequest:
    """The message of a :class:`GenerationOptions` validation error."""
    return invalid_request(
        exc,
        prefix=what,
        locate=option_location,
        unknown=lambda _: ("option", OPTION_NAMES),
        fields=OPTION_FIELDS,
    )
