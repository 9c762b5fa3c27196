"""The llmspell kernel protocol (SPEC §5), defined once: the message types, one pydantic model
per command for its request (:mod:`.requests`) and its ok result (:mod:`.results`), and the
reply builders (:mod:`.replies`). The kernel validates with these models, the client's typed
methods send and parse them, and ``docs/protocol.md`` and ``docs/protocol.schema.json`` are
generated from them (``scripts/protocol_schema.py``)."""

from .replies import error_reply, ok_reply, wire_safe
from .requests import REQUESTS, Request, command_of, parse_request, validate
from .results import RESULTS, Result

PROTOCOL_VERSION = "1.2"
"""1.1 added ``cancel`` and ``lease``, and ``ps`` ``requests``; 1.2 added ``embed`` and the
generation option ``format``. Every earlier request means what it meant."""
REQUEST_TYPE = "model_request"
REPLY_TYPE = "model_reply"
PROGRESS_TYPE = "model_progress"
STREAM_TYPE = "model_stream"

COMMANDS = tuple(REQUESTS)
"""Every command's name, in the documented order."""

__all__ = [
    "COMMANDS",
    "PROGRESS_TYPE",
    "PROTOCOL_VERSION",
    "REPLY_TYPE",
    "REQUESTS",
    "REQUEST_TYPE",
    "RESULTS",
    "STREAM_TYPE",
    "Request",
    "Result",
    "command_of",
    "error_reply",
    "ok_reply",
    "parse_request",
    "validate",
    "wire_safe",
]
