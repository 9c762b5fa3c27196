"""Constrained decoding of the ``format`` option, in a model runner: llguidance's grammar
engine masks, before each token is sampled, every token that cannot continue an answer the
schema accepts.

Chosen by measurement on this machine (Gemma 3 270M, 262,144-token vocabulary; see
docs/benchmarks.md): llguidance compiles a schema in about 2 ms and computes a mask in about
0.5 ms, and enforces numeric bounds, ``pattern``, ``maxLength``, ``enum``, ``required`` and
``additionalProperties: false``. llama-cpp-python's ``LlamaGrammar.from_json_schema`` let
``maximum`` through and ran about 1 token/s; outlines-core's regex dropped integer bounds and
took 2.3 s to index each schema; xgrammar needs PyTorch.

The tokenizer llguidance needs is built from the model's vocabulary once per loaded model (2 s
for Gemma's vocabulary) and kept with it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidRequest
from ..structured import OutputFormat, schema_of
from .ids import BACKEND

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llguidance import LLTokenizer

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How a constrained answer is laid out: on one line, with a space after ``,`` and ``:`` (a
model left free to add white space can fill its answer with it)."""

_TOKENIZERS: weakref.WeakKeyDictionary[Llama, LLTokenizer] = weakref.WeakKeyDictionary()


def tokenizer(llama: Llama) -> LLTokenizer:
    """llguidance's tokenizer of ``llama``'s vocabulary (built once per loaded model); its
    end tokens are the model's end-of-text and end-of-turn tokens."""
    cached = _TOKENIZERS.get(llama)
    if cached is None:
        cached = _build_tokenizer(llama)
        _TOKENIZERS[llama] = cached
    return cached


def end_tokens(llama: Llama) -> list[int]:
    """The model's end-of-text and end-of-turn tokens."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    ends = {llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab)}
    return sorted(token for token in ends if token >= 0)


def _build_tokenizer(llama: Llama) -> LLTokenizer:
    """What ``llguidance.llamacpp.lltokenizer_from_vocab`` does, with llama.cpp's current
    functions (it calls the deprecated ``llama_token_get_attr`` once per token): each token's
    bytes, control tokens (and user-defined ones that look like them) marked with a leading
    0xFF as llguidance wants them, and llama.cpp's own tokenizer for the text in between."""
    import ctypes

    import llama_cpp
    from llguidance import LLTokenizer

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    size = 16 * 1024
    buffer = ctypes.create_string_buffer(size + 1)
    special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    user_defined = llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    tokens: list[bytes] = []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, True)
        if length < 0:
            raise ValueError(f"token {token} does not fit in {size} bytes")
        piece = buffer.raw[:length]
        attributes = llama_cpp.llama_vocab_get_attr(vocab, token)
        if attributes & special or (
            attributes & user_defined and piece.startswith(b"<") and piece.endswith(b">")
        ):
            piece = b"\xff" + piece
        tokens.append(piece)
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    built: LLTokenizer = LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens,
        vocab_ptr=vocab,
        tokenize_fptr=tokenize,
        eos_token=end_tokens(llama),
        slices=None,
    )
    return built


class Constraint:
    """A llama-cpp-python logits processor that lets through only the tokens that can
    continue an answer of ``output``, for a generation whose prompt has ``prompt_tokens``
    tokens. :class:`InvalidRequest` if llguidance cannot enforce the schema."""

    def __init__(self, model_id: str, llama: Llama, output: OutputFormat, prompt_tokens: int):
        from llguidance import LLMatcher

        grammar = LLMatcher.grammar_from_json_schema(
            schema_of(output),
            defaults=JSON_LAYOUT,  # type: ignore[arg-type]
        )
        self.matcher = LLMatcher(tokenizer(llama), grammar, log_level=0)
        if self.matcher.is_error():
            raise InvalidRequest(
                f"{model_id}: option 'format': the schema cannot be enforced:"
                f" {self.matcher.get_error()}",
                model=model_id,
                backend=BACKEND,
            )
        self.mask = np.full((int(llama.n_vocab()) + 31) // 32, -1, dtype=np.int32)
        self.ends = end_tokens(llama)
        self.start = prompt_tokens
        self.consumed = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """``scores`` with every token the grammar refuses next at minus infinity (the tokens
        sampled since the last call are given to the grammar first)."""
        for token in input_ids[self.start + self.consumed :]:
            self.matcher.consume_token(int(token))
            self.consumed += 1
        if self.matcher.is_error():  # cannot happen with the mask applied; end, do not ramble
            ended = scores[self.ends].copy()
            scores[:] = -np.inf
            scores[self.ends] = ended
            return scores
        self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        allowed = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: len(scores)]
        scores[allowed == 0] = -np.inf
        return scores
