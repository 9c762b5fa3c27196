"""Tiny GGUF files written with the ``gguf`` package, for tests that need a real, small model
file (llama architecture, a 29-token vocabulary, Q4_K_M file type)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENS = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(97, 123)]


def tiny_writer(
    path: Path,
    name: str,
    architecture: str = "llama",
    *,
    block_count: int = 1,
    rms_eps: float = 1e-5,
    tokens: list[str] = TOKENS,
) -> Any:
    """A ``gguf.GGUFWriter`` with the hyperparameters and vocabulary written (the keyword
    arguments make hostile ones); add keys and tensors, then call :func:`write_out`."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(name)
    writer.add_block_count(block_count)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_file_type(15)  # MOSTLY_Q4_K_M
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(([2, 3, 3] + [1] * len(tokens))[: len(tokens)])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    return writer


def write_out(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
