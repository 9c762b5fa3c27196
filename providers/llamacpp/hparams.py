"""Hyperparameters that llama.cpp asserts on, checked from the GGUF header before llama.cpp sees
the file: llama.cpp aborts the whole process (``GGML_ASSERT``) on a layer count of 0, and
misbehaves on NaN epsilons or a vocabulary of empty strings, so such a file is refused at import
and pull, and before a load of one that is in the store already.
"""

from __future__ import annotations

import math

from .gguf_header import GGUFHeader

MAX_LAYERS = 512
"""llama.cpp's ``LLAMA_MAX_LAYERS``."""
TOKENS = "tokenizer.ggml.tokens"


def problem(header: GGUFHeader) -> str | None:
    """Why llama.cpp must not load a file with this header, or None."""
    arch = header.values.get("general.architecture")
    numbers = header.numbers
    if arch:
        layers = numbers.get(f"{arch}.block_count")
        if layers is not None and not 1 <= layers <= MAX_LAYERS:
            return f"{arch}.block_count is {_shown(layers)} (a model has 1 to {MAX_LAYERS} layers)"
        for key in (f"{arch}.embedding_length", f"{arch}.attention.head_count"):
            value = numbers.get(key)
            if value is not None and not value >= 1:
                return f"{key} is {_shown(value)} (it must be at least 1)"
        for key in (
            f"{arch}.attention.layer_norm_rms_epsilon",
            f"{arch}.attention.layer_norm_epsilon",
        ):
            value = numbers.get(key)
            if value is not None and not (math.isfinite(value) and value > 0):
                return f"{key} is {_shown(value)} (it must be a finite number above 0)"
    tokens = header.array_lengths.get(TOKENS)
    if tokens is None and header.values.get("tokenizer.ggml.model") not in (None, "none"):
        return f"it names a tokenizer but has no {TOKENS} (the model has no vocabulary)"
    if tokens is not None:
        if tokens == 0:
            return f"{TOKENS} is empty (the model has no vocabulary)"
        empty = header.empty_strings.get(TOKENS, 0)
        if empty * 2 > tokens:
            return f"{empty} of the {tokens} tokens of {TOKENS} are empty strings"
    return None


def _shown(value: float) -> str:
    return str(int(value)) if isinstance(value, int) else repr(value)
