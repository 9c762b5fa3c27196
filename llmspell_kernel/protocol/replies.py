"""Building ``model_reply`` contents: ``{"status": "ok", "command": C, ...result}`` or the error
reply, whose ``ename`` is the exception's class name."""

from __future__ import annotations

import json
import re
import traceback
from typing import Any

from providers.errors import LLMSpellError

from .results import Result

_SURROGATE = re.compile("[\ud800-\udfff]")


def ok_reply(command: str, result: Result) -> dict[str, Any]:
    return wire_safe({"status": "ok", "command": command, **result.content()})


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


def wire_safe(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` as a message can carry it: values JSON cannot hold become text, and lone
    UTF-16 surrogates become U+FFFD.

    A request may hold lone surrogates (escaped JSON such as ``"\\ud800"`` decodes to them)
    and a reply echoes what was wrong; but a message is UTF-8 on the wire, where they cannot
    be encoded: jupyter_client's packer would raise and the request would go unanswered.
    """
    text = json.dumps(content, default=str, ensure_ascii=False)
    result: dict[str, Any] = json.loads(_SURROGATE.sub("\ufffd", text))
    return result
