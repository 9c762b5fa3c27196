"""A generation stopped by an interrupt (a notebook's Stop, Ctrl-C in ``llmspell repl``).

The ``KeyboardInterrupt`` lands deep in the code that waits for the model; the cell shows one
line, "generation stopped after 37 tokens" (the shell's display of llmspell errors), not the
frames it went through. :class:`GenerationStopped` is both an llmspell error and a
``KeyboardInterrupt``, so ``except KeyboardInterrupt`` in a user's loop still catches it.
"""

from __future__ import annotations

from providers import Cancelled


class GenerationStopped(Cancelled, KeyboardInterrupt):
    """An interrupt stopped a generation after ``tokens`` tokens."""

    def __init__(self, tokens: int, model: str | None = None) -> None:
        super().__init__(
            f"generation stopped after {tokens} token{'s' if tokens != 1 else ''}", model=model
        )
        self.tokens = tokens
