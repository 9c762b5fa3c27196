"""The llmspell kernel protocol (SPEC §5): request validation and reply building.

A ``model_request`` carries ``{"command": C, ...fields}``. :func:`parse_request` checks it
against :data:`COMMANDS` (required and optional fields with their types) and raises
:class:`~providers.errors.InvalidRequest` with a precise message for anything wrong: no
command, an unknown command (the known ones are listed), a missing or unknown field, a wrong
type. Replies are built by :func:`ok_reply` and :func:`error_reply`; the ``ename`` of an error
reply is the exception's class name.

Optional fields may be sent as ``null``; that means "not given".
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from providers.errors import InvalidRequest, LLMSpellError
from providers.types import GenerationOptions, Message

PROTOCOL_VERSION = "1.0"
REQUEST_TYPE = "model_request"
REPLY_TYPE = "model_reply"
PROGRESS_TYPE = "model_progress"
STREAM_TYPE = "model_stream"

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


@dataclass(frozen=True)
class CommandSchema:
    """The fields one command takes: name → type, required or optional."""

    required: Mapping[str, type] = field(default_factory=dict)
    optional: Mapping[str, type] = field(default_factory=dict)

    def all_fields(self) -> list[str]:
        return [*self.required, *self.optional]


COMMANDS: dict[str, CommandSchema] = {
    "list": CommandSchema(optional={"backend": str}),
    "status": CommandSchema(optional={"backend": str}),
    "info": CommandSchema(required={"model": str}),
    "pull": CommandSchema(required={"model": str}, optional={"force": bool, "quantization": str}),
    "remove": CommandSchema(required={"model": str}),
    "available": CommandSchema(optional={"backend": str, "recommended": bool}),
    "import": CommandSchema(required={"path": str}, optional={"name": str}),
    "load": CommandSchema(required={"model": str}),
    "unload": CommandSchema(required={"model": str}),
    "ps": CommandSchema(),
    "generate": CommandSchema(
        required={"model": str},
        optional={"prompt": str, "messages": list, "options": dict, "stream": bool},
    ),
}

_SURROGATE = re.compile("[\ud800-\udfff]")
_ROLES = ("system", "user", "assistant")
_FLOAT_OPTIONS = ("temperature", "top_p", "min_p", "repeat_penalty")
_INT_OPTIONS = ("top_k", "seed", "max_tokens", "num_ctx")


@dataclass(frozen=True)
class Request:
    """A validated model request. ``fields`` holds only the fields that were given."""

    command: str
    fields: dict[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


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
    if "command" not in content or content["command"] is None:
        raise InvalidRequest(
            f"model_request has no 'command' (expected one of {', '.join(COMMANDS)})"
        )
    command = content["command"]
    if not isinstance(command, str):
        raise InvalidRequest(f"'command' must be a string, not {_json_type(command)}")
    schema = COMMANDS.get(command)
    if schema is None:
        raise InvalidRequest(f"unknown command {command!r} (expected one of {', '.join(COMMANDS)})")
    unknown = sorted(k for k in content if k != "command" and k not in schema.all_fields())
    if unknown:
        accepted = ", ".join(schema.all_fields()) or "none"
        raise InvalidRequest(
            f"{command}: unknown field{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (accepted: {accepted})"
        )
    given: dict[str, Any] = {}
    for name, kind in schema.required.items():
        value = content.get(name)
        if value is None:
            raise InvalidRequest(f"{command}: missing required field {name!r}")
        given[name] = _check_type(command, name, value, kind)
    for name, kind in schema.optional.items():
        value = content.get(name)
        if value is not None:
            given[name] = _check_type(command, name, value, kind)
    if command == "generate":
        _check_generate(given)
    return Request(command=command, fields=given)


def _check_type(command: str, name: str, value: Any, kind: type) -> Any:
    # bool is a subclass of int, and JSON has no other way to say "flag": be strict.
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        raise InvalidRequest(
            f"{command}: field {name!r} must be {_TYPE_NAMES[kind]}, not {_json_type(value)}"
        )
    if kind is str and not value.strip():
        raise InvalidRequest(f"{command}: field {name!r} must not be empty")
    return value


def _check_generate(given: dict[str, Any]) -> None:
    has_prompt = "prompt" in given
    has_messages = "messages" in given
    if has_prompt == has_messages:
        raise InvalidRequest("generate: give exactly one of 'prompt' or 'messages'")
    if has_messages:
        given["messages"] = parse_messages(given["messages"])
    given["options"] = parse_options(given.get("options", {}))


def parse_messages(value: list[Any]) -> list[Message]:
    """``[{"role", "content"}, ...]`` → :class:`Message` list; raises :class:`InvalidRequest`."""
    if not value:
        raise InvalidRequest("generate: 'messages' must not be empty")
    messages: list[Message] = []
    for index, item in enumerate(value):
        where = f"generate: messages[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest(f"{where} must be an object, not {_json_type(item)}")
        extra = sorted(set(item) - {"role", "content"})
        if extra:
            raise InvalidRequest(f"{where}: unknown field(s) {', '.join(map(repr, extra))}")
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            roles = ", ".join(_ROLES)
            raise InvalidRequest(f"{where}: 'role' must be one of {roles}, not {role!r}")
        if not isinstance(content, str):
            kind = _json_type(content)
            raise InvalidRequest(f"{where}: 'content' must be a string, not {kind}")
        messages.append(Message(role=role, content=content))
    return messages


def parse_options(value: Mapping[str, Any]) -> GenerationOptions:
    """A dict of :class:`GenerationOptions` fields → the options; raises :class:`InvalidRequest`."""
    known = [f.name for f in fields(GenerationOptions)]
    unknown = sorted(k for k in value if k not in known)
    if unknown:
        raise InvalidRequest(
            f"generate: unknown option(s) {', '.join(map(repr, unknown))} "
            f"(accepted: {', '.join(known)})"
        )
    options: dict[str, Any] = {}
    for name, item in value.items():
        if item is None:
            continue
        where = f"generate: option {name!r}"
        if name in _FLOAT_OPTIONS:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise InvalidRequest(f"{where} must be a number, not {_json_type(item)}")
            options[name] = float(item)
        elif name in _INT_OPTIONS:
            if isinstance(item, bool) or not isinstance(item, int):
                raise InvalidRequest(f"{where} must be an integer, not {_json_type(item)}")
            if name in ("max_tokens", "num_ctx") and item < 1:
                raise InvalidRequest(f"{where} must be at least 1, not {item}")
            options[name] = item
        elif name == "stop":
            stops = [item] if isinstance(item, str) else item
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise InvalidRequest(f"{where} must be a string or a list of strings")
            options[name] = tuple(stops)
    return GenerationOptions(**options)


def ok_reply(command: str, result: Mapping[str, Any]) -> dict[str, Any]:
    return wire_safe({"status": "ok", "command": command, **result})


def error_reply(command: str | None, exc: BaseException) -> dict[str, Any]:
    """The error reply for ``exc``: ename is its class name, with the formatted traceback."""
    content: dict[str, Any] = {
        "status": "error",
        "command": command,
        "ename": type(exc).__name__,
        "evalue": exc.message if isinstance(exc, LLMSpellError) else str(exc),
        "traceback": traceback.format_exception(exc),
    }
    if isinstance(exc, LLMSpellError):
        content["model"] = exc.model
        content["backend"] = exc.backend
    return wire_safe(content)


def wire_safe(content: Mapping[str, Any]) -> dict[str, Any]:
    """``content`` as a message can carry it: values JSON cannot hold become text, and lone
    UTF-16 surrogates become U+FFFD.

    A request may hold lone surrogates (escaped JSON such as ``"\\ud800"`` decodes to them)
    and a reply echoes what was wrong; but a message is UTF-8 on the wire, where they cannot
    be encoded: jupyter_client's packer would raise and the request would go unanswered.
    """
    text = json.dumps(content, default=str, ensure_ascii=False)
    result: dict[str, Any] = json.loads(_SURROGATE.sub("\ufffd", text))
    return result


def _json_type(value: Any) -> str:
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
