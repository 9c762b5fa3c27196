"""Conversions between Ollama's JSON shapes and llmspell's value objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..types import GenerationOptions, LoadedModel, Metrics, ModelInfo

BACKEND = "ollama"
NANOSECONDS = 1_000_000_000

Json = dict[str, Any]

# llmspell option → Ollama option (the rest keep their names).
_RENAMED = {"max_tokens": "num_predict"}
# Not Ollama options: Ollama fits a long conversation into num_ctx on its own side, and
# ``format`` is a field of the request beside ``options``.
_NOT_SENT = ("overflow", "format")


def ollama_options(options: GenerationOptions) -> Json:
    """Ollama's ``options`` object: only the options that were set."""
    result: Json = {}
    for key, value in options.to_dict().items():
        if value is None or (key == "stop" and not value) or key in _NOT_SENT:
            continue
        result[_RENAMED.get(key, key)] = value
    return result


def seconds(nanoseconds: Any) -> float:
    return nanoseconds / NANOSECONDS if isinstance(nanoseconds, int | float) else 0.0


def metrics(final: Json, time_to_first_token: float | None) -> Metrics:
    """Metrics from the final (``done: true``) line of a generation; durations in seconds."""
    generated = _int(final.get("eval_count"))
    eval_seconds = seconds(final.get("eval_duration"))
    reason = final.get("done_reason")
    return Metrics(
        prompt_tokens=_int(final.get("prompt_eval_count")),
        generated_tokens=generated,
        load_seconds=seconds(final.get("load_duration")),
        prompt_seconds=seconds(final.get("prompt_eval_duration")),
        generation_seconds=eval_seconds,
        total_seconds=seconds(final.get("total_duration")),
        time_to_first_token=time_to_first_token,
        tokens_per_second=generated / eval_seconds if generated and eval_seconds > 0 else None,
        stop_reason=str(reason) if reason else None,
    )


def utc_iso(value: Any) -> str | None:
    """Ollama's RFC 3339 timestamp (local offset, nanoseconds) as ISO 8601 UTC with whole
    seconds and ``Z`` (``2024-06-04T21:38:31Z``), the format of the llamacpp backend's times."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    date, sep, rest = text.partition(".")
    if sep:
        # Python parses at most microseconds: trim the fraction before the offset.
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{date}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def model_info(entry: Json, *, loaded: bool, backend: str = BACKEND) -> ModelInfo:
    """A ModelInfo from one ``/api/tags`` (or ``/api/ps``) entry of the Ollama ``backend``."""
    details = entry.get("details") or {}
    name = str(entry.get("name") or entry.get("model") or "")
    return ModelInfo(
        id=name,
        backend=backend,
        size_bytes=_int_or_none(entry.get("size")),
        quantization=details.get("quantization_level") or None,
        modified_at=utc_iso(entry.get("modified_at")),
        loaded=loaded,
        format=details.get("format") or "gguf",
        family=details.get("family") or None,
        parameter_size=details.get("parameter_size") or None,
        details={
            "digest": entry.get("digest"),
            "families": details.get("families"),
            "parent_model": details.get("parent_model") or None,
        },
    )


def loaded_model(entry: Json, backend: str = BACKEND) -> LoadedModel:
    """A LoadedModel from one ``/api/ps`` entry of the Ollama ``backend``."""
    return LoadedModel(
        id=str(entry.get("name") or entry.get("model") or ""),
        backend=backend,
        size_bytes=_int_or_none(entry.get("size")),
        expires_at=utc_iso(entry.get("expires_at")),
    )


def parse_parameters(text: Any) -> dict[str, Any]:
    """``/api/show``'s ``parameters`` text (``num_ctx 4096\\nstop "<x>"``) as a dict.

    Repeated keys (``stop``) become lists; numbers become numbers; quotes are removed.
    """
    result: dict[str, Any] = {}
    if not isinstance(text, str):
        return result
    for line in text.splitlines():
        key, _, raw = line.strip().partition(" ")
        if not key:
            continue
        value = _parameter_value(raw.strip())
        if key in result:
            previous = result[key]
            result[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            result[key] = [value] if key == "stop" else value
    return result


def _parameter_value(raw: str) -> Any:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None
