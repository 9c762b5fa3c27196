"""Rendering a GGUF's own chat template with bounds: a template is code from the model file, and
Jinja's sandbox keeps it from touching Python but not from looping or allocating without end.

Measured with llama-cpp-python's renderer: ``{% for a in range(100000) %}{% for b in
range(100000) %}{% endfor %}{% endfor %}`` kept a core busy for good (under the model's turn),
and ``{{ 'x' * 3000000000 }}`` allocated ~3 GB while the template was compiled (Jinja folds
constant expressions). Here ``range`` counts what all its calls hand out in one render
(:data:`MAX_RANGE_ITEMS`), ``*`` and ``**`` refuse results larger than :data:`MAX_OUTPUT_CHARS`
(which also keeps Jinja from folding them at compile time), and the rendered text may not
exceed :data:`MAX_OUTPUT_CHARS`. Otherwise the environment is llama-cpp-python's
(``Jinja2ChatFormatter``): trim_blocks, lstrip_blocks, loop controls, ``{% generation %}``,
Transformers' ``tojson``, ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import functools
from typing import Any

MAX_RANGE_ITEMS = 1_000_000
"""What ``range`` may hand out in one render, all its calls together."""
MAX_OUTPUT_CHARS = 16 * 2**20
"""The longest prompt a template may render, and the largest ``*`` or ``**`` result."""


class TemplateLimitError(Exception):
    """A template went past one of the bounds."""


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    if isinstance(seq, str | list | tuple) and isinstance(times, int):
                        if len(seq) * times > MAX_OUTPUT_CHARS:
                            raise TemplateLimitError(
                                f"'*' would make {len(seq) * times} items (at most"
                                f" {MAX_OUTPUT_CHARS} are allowed)"
                            )
            if operator == "**" and isinstance(left, int) and isinstance(right, int):
                if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > 4 * MAX_OUTPUT_CHARS:
                    raise TemplateLimitError(f"'**' would make a number of about {right} digits")
            return super().call_binop(context, operator, left, right)

    environment = Bounded(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = Jinja2ChatFormatter.tojson  # Transformers' rendering
    return environment


@functools.lru_cache(maxsize=16)
def _compiled(source: str) -> Any:
    return _environment().from_string(source)


def render(source: str, **variables: Any) -> str:
    """``source`` rendered with ``variables`` and the chat-template helpers, within the bounds;
    :class:`TemplateLimitError` past them (Jinja's own errors pass through)."""
    handed_out = 0

    def bounded_range(*args: int) -> range:
        nonlocal handed_out
        items = range(*args)
        handed_out += len(items)
        if handed_out > MAX_RANGE_ITEMS:
            raise TemplateLimitError(
                f"range() handed out more than {MAX_RANGE_ITEMS} items in one render"
            )
        return items

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    pieces: list[str] = []
    size = 0
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    for piece in _compiled(source).generate(
        range=bounded_range,
        raise_exception=raise_exception,
        strftime_now=Jinja2ChatFormatter.strftime_now,
        **variables,
    ):
        size += len(piece)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateLimitError(f"the prompt grew past {MAX_OUTPUT_CHARS} characters")
        pieces.append(piece)
    return "".join(pieces)
