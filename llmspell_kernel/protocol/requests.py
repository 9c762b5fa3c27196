"""The request of every ``model_request`` command, as one pydantic model each.

A ``model_request`` carries ``{"command": C, ...fields}``. :func:`parse_request` picks the model
of ``C`` from :data:`REQUESTS` and validates the fields with it, raising
:class:`~providers.errors.InvalidRequest` with one precise message for anything wrong: no
command, an unknown command (the known ones are listed), a missing or unknown field, a wrong
type, an empty string, an option out of its range. Optional fields may be sent as ``null``;
that means "not given". The client builds the same models before it sends, so both ends refuse
the same requests with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from providers.errors import InvalidRequest
from providers.options import (
    OPTION_FIELDS,
    OPTION_NAMES,
    GenerationOptions,
    Message,
    option_location,
)
from providers.validation import invalid_request, json_type


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[StrictStr, AfterValidator(_not_blank)]
"""A string that is not empty or only white space."""
Spec = Annotated[Text, Field(description="A model spec: [provider/]model[:variant][@backend].")]
BackendName = Annotated[
    Text,
    Field(description="A backend: llamacpp, ollama, or a named endpoint of the kernel's config."),
]


class Request(BaseModel):
    """The fields of one command (``command`` itself travels beside them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        """The fields as the wire carries them (those left at ``None`` omitted)."""
        return self.model_dump(mode="json", exclude_none=True)

    def content(self) -> dict[str, Any]:
        """The ``model_request`` content for this request."""
        return {"command": self.command, **self.fields()}


class ListRequest(Request):
    """Installed models of every backend, or of one."""

    command: ClassVar[str] = "list"
    backend: BackendName | None = None


class StatusRequest(Request):
    """Each backend's health."""

    command: ClassVar[str] = "status"
    backend: BackendName | None = None


class InfoRequest(Request):
    """Everything known about one installed model."""

    command: ClassVar[str] = "info"
    model: Spec


class PullRequest(Request):
    """Download a model (progress on IOPub)."""

    command: ClassVar[str] = "pull"
    model: Spec
    force: StrictBool = Field(
        default=False, description="Download again, even if the model or its file is in the store."
    )
    quantization: Text | None = Field(default=None, description="e.g. Q4_K_M.")


class RemoveRequest(Request):
    """Delete an installed model."""

    command: ClassVar[str] = "remove"
    model: Spec


class AvailableRequest(Request):
    """Models that can be pulled."""

    command: ClassVar[str] = "available"
    backend: BackendName | None = None
    recommended: StrictBool = Field(default=False, description="Only the recommended ones.")


class ImportRequest(Request):
    """Register a GGUF file already on disk (llamacpp)."""

    command: ClassVar[str] = "import"
    path: Text = Field(description="Absolute, or relative to the kernel's working directory.")
    name: Text | None = Field(default=None, description="The model's name (default: the file's).")
    link: StrictBool = Field(
        default=False,
        description="Link the file in place (hard link, else symlink) instead of copying it;"
        " the file must then stay where it is. Since 1.1.",
    )


class CopyRequest(Request):
    """A second name for an installed model (llamacpp: no bytes are copied). Since 1.1."""

    command: ClassVar[str] = "copy"
    model: Spec
    name: Text = Field(description="The new name, e.g. my-gemma[:q4].")


class LoadRequest(Request):
    """Load a model into memory (progress on IOPub)."""

    command: ClassVar[str] = "load"
    model: Spec


class UnloadRequest(Request):
    """Free a loaded model."""

    command: ClassVar[str] = "unload"
    model: Spec


class PsRequest(Request):
    """Models held in memory."""

    command: ClassVar[str] = "ps"


class GenerateRequest(Request):
    """Generate text: ``prompt`` continues plain text, ``messages`` go through the model's chat
    template. Exactly one of the two."""

    command: ClassVar[str] = "generate"
    model: Spec
    prompt: Text | None = Field(default=None, description="Plain text to continue.")
    messages: list[Message] | None = Field(
        default=None, min_length=1, description="A conversation (roles system, user, assistant)."
    )
    options: GenerationOptions = Field(
        default_factory=GenerationOptions, description="Sampling and length options."
    )
    stream: StrictBool = Field(default=False, description="Send the text on IOPub as it comes.")

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self


def _one_or_more(value: Any) -> Any:
    """``input``: a string is one text; a string or a list, else an error saying so."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a string or a list of strings, not {json_type(value)}")
    return value


Inputs = Annotated[
    list[Text],
    BeforeValidator(_one_or_more),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ],
            "description": "One text, or a list of texts (one vector each, in order).",
        }
    ),
]


class EmbedRequest(Request):
    """Embedding vectors of one text or several (one vector each, in order). Since 1.2."""

    command: ClassVar[str] = "embed"
    model: Spec
    input: Inputs
    truncate: StrictBool = Field(
        default=True,
        description="Cut an input longer than the model's embedding context to fit (as"
        " Ollama's /api/embed); false refuses it with InvalidRequest naming the input.",
    )
    normalize: StrictBool = Field(
        default=True, description="Scale each vector to length 1 (a dot product is the cosine)."
    )


class CancelRequest(Request):
    """Cancel one running model request (or, without ``request``, every one) and nothing
    else: other requests and running cells go on. Answered at once on the control channel
    (also accepted on a shell)."""

    command: ClassVar[str] = "cancel"
    request: Text | None = Field(
        default=None, description="The msg_id of the model_request to cancel (default: all)."
    )


class LeaseRequest(Request):
    """Hold a client lease (sent on the control channel, renewed before it runs out): while a
    client's lease runs, its work goes on; when it runs out (the client is gone), the kernel
    cancels the client's running model requests and deletes its subshells. Clients that never
    take a lease are never timed out."""

    command: ClassVar[str] = "lease"
    seconds: float = Field(
        default=10.0, gt=0, le=3600, allow_inf_nan=False, description="How long it lasts."
    )


REQUESTS: dict[str, type[Request]] = {
    model.command: model
    for model in (
        ListRequest,
        StatusRequest,
        InfoRequest,
        PullRequest,
        RemoveRequest,
        AvailableRequest,
        ImportRequest,
        CopyRequest,
        LoadRequest,
        UnloadRequest,
        PsRequest,
        GenerateRequest,
        CancelRequest,
        LeaseRequest,
        EmbedRequest,
    )
}
"""Every command, by name, in the order the docs list them."""


def command_of(content: Any) -> str | None:
    """The command a request names, if it names one as a string (for echoing in replies)."""
    if isinstance(content, Mapping):
        command = content.get("command")
        if isinstance(command, str):
            return command
    return None


def parse_request(content: Any) -> Request:
    """Validate ``content`` of a ``model_request``; raises :class:`InvalidRequest`."""
    if not isinstance(content, Mapping):
        raise InvalidRequest(
            f"model_request content must be an object, not {type(content).__name__}"
        )
    known = ", ".join(REQUESTS)
    command = content.get("command")
    if command is None:
        raise InvalidRequest(f"model_request has no 'command' (expected one of {known})")
    if not isinstance(command, str):
        raise InvalidRequest(f"'command' must be a string, not {json_type(command)}")
    model = REQUESTS.get(command)
    if model is None:
        raise InvalidRequest(f"unknown command {command!r} (expected one of {known})")
    fields = {k: v for k, v in content.items() if k != "command" and v is not None}
    return validate(model, fields)


R = TypeVar("R", bound="Request")


def validate(model: type[R], fields: Mapping[str, Any]) -> R:
    """``fields`` as a ``model`` request; raises :class:`InvalidRequest` naming the problem."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise request_error(model, exc) from None


def request_error(model: type[Request], exc: ValidationError) -> InvalidRequest:
    accepted = tuple(model.model_fields)

    def unknown(parent: tuple[int | str, ...]) -> tuple[str, tuple[str, ...]]:
        if parent == ("options",):
            return "option", OPTION_NAMES
        if parent:
            return f"field of {_place(parent)}", ("role", "content")
        return "field", accepted

    return invalid_request(
        exc,
        prefix=model.command,
        locate=_locate,
        unknown=unknown,
        fields={**model.model_fields, **OPTION_FIELDS},
    )


def _locate(loc: tuple[int | str, ...]) -> str:
    """``('model',)`` → ``field 'model'``; ``('messages', 0, 'role')`` → ``field 'role' of
    messages[0]``; ``('options', 'top_p')`` → ``option 'top_p'``."""
    if not loc:
        return ""
    if loc[0] == "options" and len(loc) > 1:
        return option_location(loc)
    if len(loc) == 1:
        return f"field {loc[0]!r}"
    if isinstance(loc[-1], str):
        return f"field {loc[-1]!r} of {_place(loc[:-1])}"
    return _place(loc)


def _place(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0)`` → ``messages[0]``."""
    return str(loc[0]) + "".join(f"[{part}]" for part in loc[1:])
