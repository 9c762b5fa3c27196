"""GGUF metadata, read without loading the weights.

llama.cpp reads a model "vocab only" (header and tokenizer, no tensors) in ~0.35 s for the
253 MB Gemma 3 270M file; the ``gguf`` package's pure-Python ``GGUFReader`` took ~8 s on the
same file (it decodes every tokenizer array). So llama.cpp reads, and results are cached per
file (device, inode, mtime, size).
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelLoadError
from .native import prepare_llama_cpp

_CACHE_SIZE = 64
_QUANT_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d_[A-Z0-9]+(?:_[A-Z0-9]+)*|BF16|F16|FP16|F32|MXFP4)(?![A-Za-z0-9])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class GGUFMetadata:
    """What ``info`` shows about a GGUF file."""

    architecture: str | None
    name: str | None
    parameter_size: str | None
    parameter_count: int | None
    quantization: str | None
    context_length: int | None
    chat_template: str | None
    values: dict[str, str] = field(default_factory=dict, repr=False)
    """Every scalar key of the header, as llama.cpp renders it (arrays are left out)."""

    @property
    def family(self) -> str | None:
        return self.architecture


_lock = threading.Lock()
_cache: OrderedDict[tuple[int, int, int, int], GGUFMetadata] = OrderedDict()


def read_metadata(path: Path) -> GGUFMetadata:
    """The metadata of the GGUF at ``path``; :class:`ModelLoadError` when it cannot be read."""
    try:
        stat = path.stat()
        # By file identity, not name: an imported file renamed into the store (or hard-linked)
        # is the same file.
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    values, n_params = _read_values(path)
    metadata = parse_metadata(values, file_name=path.name, parameter_count=n_params)
    with _lock:
        _cache[key] = metadata
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return metadata


def parse_metadata(
    values: dict[str, str], *, file_name: str = "", parameter_count: int | None = None
) -> GGUFMetadata:
    """Interpret raw header values (strings, as llama.cpp gives them)."""
    arch = values.get("general.architecture") or None
    count = parameter_count if parameter_count and parameter_count > 0 else None
    size = values.get("general.size_label") or (format_parameters(count) if count else None)
    return GGUFMetadata(
        architecture=arch,
        name=values.get("general.name") or None,
        parameter_size=size,
        parameter_count=count,
        quantization=quantization_of(values.get("general.file_type"), file_name),
        context_length=_int(values.get(f"{arch}.context_length")) if arch else None,
        chat_template=values.get("tokenizer.chat_template") or None,
        values=dict(values),
    )


def quantization_of(file_type: str | None, file_name: str = "") -> str | None:
    """``general.file_type`` as a name (15 → ``Q4_K_M``), else the quant in the file name."""
    number = _int(file_type)
    if number is not None:
        from gguf import LlamaFileType

        try:
            name = LlamaFileType(number).name
        except ValueError:
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    match = _QUANT_IN_NAME.search(file_name)
    return match.group(1).upper() if match else None


def format_parameters(count: int) -> str:
    """268098176 → ``268M``; 8030261248 → ``8.0B``."""
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _read_values(path: Path) -> tuple[dict[str, str], int | None]:
    prepare_llama_cpp()
    from llama_cpp import llama_cpp as native

    native.llama_backend_init()
    params = native.llama_model_default_params()
    params.vocab_only = True
    try:
        model = native.llama_model_load_from_file(str(path).encode("utf-8"), params)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read GGUF metadata of {path}: {exc}") from exc
    if not model:
        raise ModelLoadError(
            f"cannot read GGUF metadata of {path}: llama.cpp rejected the file"
            " (not a GGUF model, truncated, or an architecture this llama.cpp does not know)"
        )
    try:
        values: dict[str, str] = {}
        size = 4096
        buffer = ctypes.create_string_buffer(size)
        for index in range(native.llama_model_meta_count(model)):
            parts = []
            for getter in (
                native.llama_model_meta_key_by_index,
                native.llama_model_meta_val_str_by_index,
            ):
                needed = getter(model, index, buffer, size)
                if needed >= size:
                    size = needed + 1
                    buffer = ctypes.create_string_buffer(size)
                    getter(model, index, buffer, size)
                parts.append(buffer.value.decode("utf-8", errors="replace"))
            values[parts[0]] = parts[1]
        n_params = int(native.llama_model_n_params(model))
        return values, n_params
    finally:
        native.llama_model_free(model)
