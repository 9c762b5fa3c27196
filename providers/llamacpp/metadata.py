"""GGUF metadata, read from the file's header without loading the weights.

What is read (:mod:`.gguf_header`): the header's scalar key/values, rendered as llama.cpp renders
its model meta strings, and the tensor infos, whose element counts sum to the parameter count
(``llama_model_n_params``); the header is checked much as llama.cpp checks it (magic, version 2
or 3, sane counts and lengths, every tensor inside the file), so a truncated or foreign file is
refused at import and pull.

Why a reader of our own: llama.cpp's "vocab only" read (header and tokenizer, no tensors) took
0.34-0.49 s for the 253 MB Gemma 3 270M file, most of a pull's time after the download, and the
``gguf`` package's ``GGUFReader`` ~8 s (it decodes every tokenizer array); this reader walks the
header's 6.5 MB in ~0.02 s (measured on the same file and machine, first call in a fresh process
included), skipping arrays by their lengths. Results are cached per file (device, inode, mtime,
size).

An architecture this llama.cpp does not know passes here (the header is fine) and fails when the
model is loaded.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .gguf_header import read_header
from .hparams import TOKENS, problem

_CACHE_SIZE = 64
_QUANT_IN_NAME = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d_[A-Z0-9]+(?:_[A-Z0-9]+)*|BF16|F16|FP16|F32|MXFP4)(?![A-Za-z0-9])",
    re.IGNORECASE,
)

# llama.cpp's ``general.file_type`` values (``llama_ftype``) by name, as the gguf package's
# LlamaFileType without its MOSTLY_/ALL_ prefixes (a test keeps them equal; importing gguf
# here would cost ~0.1 s, it imports numpy).
_FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}


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
    problem: str | None = None
    """Why llama.cpp must not load the file (:func:`.hparams.problem`), or None."""
    vocab_size: int | None = None
    """How many tokens the vocabulary has."""

    def check_loadable(self, where: Path | str) -> None:
        """:class:`ModelLoadError` naming ``where`` when llama.cpp must not load the file."""
        if self.problem is not None:
            raise ModelLoadError(f"{where}: {self.problem}: llama.cpp cannot load this file")

    @property
    def family(self) -> str | None:
        return self.architecture

    def manifest_fields(self, fallback_quant: str | None) -> dict[str, Any]:
        """What a store manifest records of the file (``fallback_quant`` when the header names
        no quantization)."""
        return {
            "quantization": self.quantization or fallback_quant,
            "architecture": self.architecture,
            "parameter_size": self.parameter_size,
            "context_length": self.context_length,
        }


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
    header = read_header(path)
    metadata = parse_metadata(
        header.values, file_name=path.name, parameter_count=header.parameter_count
    )
    metadata = dataclasses.replace(
        metadata, problem=problem(header), vocab_size=header.array_lengths.get(TOKENS)
    )
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
    if number is not None and number in _FILE_TYPES:
        return _FILE_TYPES[number]
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
