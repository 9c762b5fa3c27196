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


_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
"""GGUF value types (``gguf.GGUFValueType``) of scalars, as ``struct`` formats."""


def edited_copy(source: Path, target: Path, **values: float) -> Path:
    """A copy of the GGUF ``source`` with scalar header values changed in place (each key
    keeps its type: ``block_count=0`` for ``ARCH.block_count``, dots spelled ``__``). The key
    is found by its bytes in the header (a parse of Gemma's 262,144-token header takes 8 s)."""
    import shutil
    import struct

    from providers.llamacpp.metadata import read_metadata

    arch = read_metadata(source).architecture
    with source.open("rb") as file:
        head = file.read(64 * 2**20)
    patches = []
    for name, value in values.items():
        key = name.replace("__", ".")
        for candidate in (key, f"{arch}.{key}"):
            encoded = candidate.encode()
            mark = struct.pack("<Q", len(encoded)) + encoded
            at = head.find(mark)
            if at >= 0:
                break
        else:
            raise KeyError(f"{key} is not in {source}")
        kind_at = at + len(mark)
        (kind,) = struct.unpack_from("<I", head, kind_at)
        patches.append((kind_at + 4, struct.pack(_SCALAR_FORMATS[kind], value)))
    shutil.copyfile(source, target)
    with target.open("r+b") as file:
        for offset, data in patches:
            file.seek(offset)
            file.write(data)
    return target
