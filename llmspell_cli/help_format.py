"""How the help shows options: a flag (``--force``, ``-y``, ``--help``) takes no value, so it
gets no type placeholder. typer 0.29 prints one for every parameter (``<bool>`` for flags) and
has no setting for it; :func:`hide_flag_types` makes ``TyperOption.display_type_rich`` return
nothing for flags, which both its rich help and its plain help honour."""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_MARK = "_llmspell_hides_flag_types"


def hide_flag_types() -> None:
    """No ``<bool>`` after flags in the help (idempotent). Options that take a value keep
    their ``<str>``, ``<int>``... placeholder."""
    original = TyperOption.display_type_rich
    if getattr(original, _MARK, False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag:
            return None
        return original(self, ctx)

    setattr(display_type_rich, _MARK, True)
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
