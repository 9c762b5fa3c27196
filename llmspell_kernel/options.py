"""Generation options given by users as keywords or a dict, checked into GenerationOptions.

``GenerationOptions`` itself is a plain dataclass that trusts its caller; everything that comes
from a person (``Agent(temperature=...)``, ``%%llm --max-tokens``) or from the wire goes through
:func:`generation_options` first, so a typo or a wrong type is an error naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from providers import GenerationOptions, InvalidRequest

OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GenerationOptions))

_FLOATS = ("temperature", "top_p", "min_p", "repeat_penalty")
# (lowest allowed, whether the lowest itself is allowed, highest allowed or None)
_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "temperature": (0.0, True, None),
    "top_p": (0.0, True, 1.0),
    "min_p": (0.0, True, 1.0),
    "repeat_penalty": (0.0, False, None),
    "top_k": (0, True, None),
    "max_tokens": (1, True, None),
    "num_ctx": (1, True, None),
}


def generation_options(values: Mapping[str, Any], *, what: str = "generation") -> GenerationOptions:
    """Check ``values`` and build :class:`GenerationOptions`; ``None`` values mean "default".

    Raises :class:`InvalidRequest` naming every unknown option, or the first option whose
    value has the wrong type or is out of range. ``what`` names the caller in messages.
    """
    unknown = sorted(str(name) for name in values if name not in OPTION_NAMES)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise InvalidRequest(
            f"unknown {what} option{plural} {listed} (valid: {', '.join(OPTION_NAMES)})"
        )
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name == "stop":
            checked[name] = _stop_strings(value, what)
            continue
        checked[name] = _number(name, value, what)
    return GenerationOptions(**checked)


def _number(name: str, value: Any, what: str) -> float | int:
    number: float | int
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{what} option '{name}' must be a number, not {value!r}")
        number = float(value)
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{what} option '{name}' must be an integer, not {value!r}")
        number = value
    if name in _RANGES:
        low, low_ok, high = _RANGES[name]
        too_low = number < low or (number == low and not low_ok)
        too_high = high is not None and number > high
        if too_low or too_high:
            bound = f">= {low}" if low_ok else f"> {low}"
            if high is not None:
                bound += f" and <= {high}"
            raise InvalidRequest(f"{what} option '{name}' must be {bound}, not {value!r}")
    return number


def _stop_strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidRequest(
        f"{what} option 'stop' must be a string or a list of strings, not {value!r}"
    )
