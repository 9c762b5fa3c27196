"""Conversions between the OpenAI API's JSON shapes and llmspell's value objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..structured import OutputFormat, schema_of
from ..types import GenerationOptions, Message, Metrics, ModelInfo

Json = dict[str, Any]

# llmspell option → the request fields that carry it. Beside OpenAI's own (max_tokens,
# temperature, top_p, seed, stop, frequency/presence_penalty), local servers take the sampling
# options of their engine: top_k and min_p (vLLM, llama.cpp, SGLang, LM Studio), and the repeat
# penalty under llama.cpp's name and vLLM's/SGLang's/TGI's name. num_ctx is not sent: the server
# fixed its context when it loaded the model; nor is overflow (the server refuses a conversation
# longer than its context).
_FIELDS: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens",),
    "temperature": ("temperature",),
    "top_p": ("top_p",),
    "seed": ("seed",),
    "stop": ("stop",),
    "frequency_penalty": ("frequency_penalty",),
    "presence_penalty": ("presence_penalty",),
    "top_k": ("top_k",),
    "min_p": ("min_p",),
    "repeat_penalty": ("repeat_penalty", "repetition_penalty"),
}
IGNORED_OPTIONS = ("num_ctx", "overflow")


def request_fields(options: GenerationOptions) -> Json:
    """The request fields for the options that were set."""
    body: Json = {}
    for key, value in options.to_dict().items():
        if value is None or (key == "stop" and not value):
            continue
        for field in _FIELDS.get(key, ()):
            body[field] = value
    if options.format is not None:
        body["response_format"] = response_format(options.format)
    return body


def response_format(output: OutputFormat) -> Json:
    """OpenAI's ``response_format`` for ``format``: ``json_schema`` with the schema (strict),
    or ``json_object`` for ``"json"``."""
    if isinstance(output, str):
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": output, "strict": True},
    }


def json_object_fallback(body: Json) -> Json | None:
    """``body`` asking for ``json_object`` (with the schema beside it, which llama-cpp-python's
    server enforces) instead of ``json_schema``, for a server that refuses the latter; None when
    ``body`` does not ask for ``json_schema``."""
    wanted = body.get("response_format")
    if not isinstance(wanted, dict) or wanted.get("type") != "json_schema":
        return None
    schema = schema_of(wanted["json_schema"]["schema"])
    return {**body, "response_format": {"type": "json_object", "schema": schema}}


def completion_body(model: str, prompt: str, options: GenerationOptions) -> Json:
    return {"model": model, "prompt": prompt, "stream": True, **request_fields(options)}


def chat_body(model: str, messages: Sequence[Message], options: GenerationOptions) -> Json:
    return {
        "model": model,
        "messages": [m.to_dict() for m in messages],
        "stream": True,
        **request_fields(options),
    }


def with_usage(body: Json) -> Json:
    """``body`` asking for the token counts in the stream's last event (OpenAI, vLLM,
    llama.cpp's llama-server; others ignore it or refuse it)."""
    return {**body, "stream_options": {"include_usage": True}}


def choice(data: Json) -> Json | None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first: Json = choices[0]
        return first
    return None


def completion_text(data: Json) -> str:
    """The text of one ``text_completion`` event."""
    first = choice(data)
    text = first.get("text") if first else None
    return text if isinstance(text, str) else ""


def chat_text(data: Json) -> str:
    """The text of one ``chat.completion.chunk`` event (``delta.content``)."""
    first = choice(data)
    delta = first.get("delta") if first else None
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


def finish_reason(data: Json) -> str | None:
    first = choice(data)
    reason = first.get("finish_reason") if first else None
    return str(reason) if reason else None


def metrics(
    *,
    usage: Json | None,
    timings: Json | None,
    pieces: int,
    reason: str | None,
    ttft: float | None,
    generating: float,
    total: float,
) -> Metrics:
    """The metrics of a finished stream. Token counts from the server's ``usage`` where it sent
    one, else (llama.cpp's ``timings``, else) the text-bearing events counted — one per token on
    the servers we know. Times are measured here: the prompt phase is the time to the first
    token, the generation the time from the first to the last; tokens/s is over the tokens after
    the first, as :mod:`benchmarks` counts them."""
    prompt_tokens = _int((usage or {}).get("prompt_tokens")) or _int(
        (timings or {}).get("prompt_n")
    )
    generated = (
        _int((usage or {}).get("completion_tokens"))
        or _int((timings or {}).get("predicted_n"))
        or pieces
    )
    return Metrics(
        prompt_tokens=prompt_tokens,
        generated_tokens=generated,
        load_seconds=0.0,
        prompt_seconds=ttft or 0.0,
        generation_seconds=generating,
        total_seconds=total,
        time_to_first_token=ttft,
        tokens_per_second=(generated - 1) / generating
        if generated > 1 and generating > 0
        else None,
        stop_reason=reason,
    )


def model_ids(listing: Json) -> list[str]:
    """The ids in a ``GET /v1/models`` answer."""
    return [str(e["id"]) for e in model_entries(listing)]


def model_entries(listing: Json) -> list[Json]:
    data = listing.get("data")
    if not isinstance(data, list):
        return []
    return [e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str | int)]


def model_info(
    entry: Json, *, backend: str, props: Json | None = None, url: str | None = None
) -> ModelInfo:
    """A ModelInfo from one ``/v1/models`` entry (and llama.cpp's ``/props``); ``url``, the
    server's, goes into the details."""
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    size = _int(meta.get("size")) or None
    return ModelInfo(
        id=str(entry["id"]),
        backend=backend,
        size_bytes=size,
        loaded=False,
        format="unknown",
        context_length=context_length(entry, props),
        details={k: v for k, v in entry.items() if k not in ("id", "object")}
        | ({"url": url} if url else {}),
    )


def context_length(entry: Json, props: Json | None) -> int | None:
    """The context the server runs the model with, where it says: vLLM's ``max_model_len``,
    llama.cpp's ``/props`` ``n_ctx``, else a ``context_length`` / ``max_context_length`` field
    of the entry (LM Studio, OpenRouter-like servers), else llama.cpp's training context."""
    settings = (props or {}).get("default_generation_settings")
    candidates = (
        entry.get("max_model_len"),
        settings.get("n_ctx") if isinstance(settings, dict) else None,
        (props or {}).get("n_ctx"),
        entry.get("context_length"),
        entry.get("max_context_length"),
    )
    for value in candidates:
        if _int(value) > 0:
            return _int(value)
    meta = entry.get("meta")
    train = meta.get("n_ctx_train") if isinstance(meta, dict) else None
    return _int(train) or None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)
