"""A reader of the GGUF header: key/values, tensor infos, and whether the file is complete.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3, little
endian). The header is read in 1 MiB blocks; array contents are skipped by their lengths (the
~262k strings of a tokenizer are never decoded), so the cost is that of walking a few MB of
header, whatever the size of the weights.

Scalar values are rendered as llama.cpp's model meta strings (``llama_model_meta_val_str``):
integers in decimal, floats as C++ ``std::to_string`` (``%f``), booleans ``true``/``false``,
strings as they are (up to a NUL, as they come out of llama.cpp's C buffer); arrays are left
out, as llama.cpp leaves them out of that map.

The checks are most of those llama.cpp makes before it reads tensor data (``gguf_init_from_file``
and the model loader's "tensor data is not within the file bounds"): magic, version, counts and
lengths bounded by the file's size and by limits below (a hostile header cannot make this
allocate or loop beyond the file), duplicate or empty keys, alignment, tensor shapes, types and
offsets, and every tensor inside the file. Not checked: tensor name lengths and duplicates, and
arrays of arrays, which the spec allows and llama.cpp refuses (they are skipped here). An
architecture this llama.cpp does not know is found only when it loads the model. Big-endian
files are refused (llama.cpp on a little-endian machine cannot read them either). Every failure
is a :class:`ModelLoadError` naming the file and what was wrong.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

MAX_KEY_BYTES = 65535  # the spec's limit on key length
MAX_STRING_BYTES = 64 << 20  # one scalar string value (chat templates are ~10 KB)
MAX_KEY_VALUES = 1 << 20
MAX_TENSORS = 1 << 20  # real models have a few thousand
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 8  # the spec allows arrays of arrays (llama.cpp refuses them)
_BLOCK = 1 << 20

# Smallest encodings, to bound declared counts by what the file could hold.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DIMS = [struct.Struct(f"<{n}Q") for n in range(MAX_DIMS + 1)]
_HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, key/value count
_ARRAY_HEAD_BYTES = 4 + 8  # element type, count

_STRING = 8
_ARRAY = 9
_UINT32 = 4
_TYPE_NAMES = {
    0: "uint8",
    1: "int8",
    2: "uint16",
    3: "int16",
    4: "uint32",
    5: "int32",
    6: "float32",
    7: "bool",
    8: "string",
    9: "array",
    10: "uint64",
    11: "int64",
    12: "float64",
}


def _c_float(value: float) -> str:
    if math.isnan(value):  # glibc prints the sign of a NaN
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return f"{value:f}"


_SCALARS: dict[int, tuple[struct.Struct, Callable[[float], str]]] = {
    0: (struct.Struct("<B"), str),
    1: (struct.Struct("<b"), str),
    2: (struct.Struct("<H"), str),
    3: (struct.Struct("<h"), str),
    4: (_U32, str),
    5: (struct.Struct("<i"), str),
    6: (struct.Struct("<f"), _c_float),
    7: (struct.Struct("<b"), lambda flag: "true" if flag else "false"),
    10: (_U64, str),
    11: (struct.Struct("<q"), str),
    12: (struct.Struct("<d"), _c_float),
}

# ggml tensor types: id → (elements per block, bytes per block), as ggml's type traits
# (tests check this table against the gguf package's GGML_QUANT_SIZES; importing gguf here
# would cost ~0.13 s, as much as the whole read, since it imports numpy).
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}


@dataclass(frozen=True)
class GGUFHeader:
    """What the header of a GGUF file says."""

    version: int
    values: dict[str, str] = field(repr=False)
    """Scalar key/values as llama.cpp renders them, in file order (arrays left out)."""
    tensor_count: int
    parameter_count: int
    """Elements of all tensors (what ``llama_model_n_params`` counts)."""
    alignment: int
    data_offset: int
    """Where the tensor data starts in the file."""
    data_end: int
    """Where the last tensor's data ends: the file is at least this long."""
    numbers: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    """The numeric scalar values as read (``values`` renders floats with 6 decimals)."""
    array_lengths: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """How many elements each top-level array holds."""
    empty_strings: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """How many empty strings each top-level string array holds."""


def read_header(path: Path) -> GGUFHeader:
    """Read and check the GGUF header of ``path``; :class:`ModelLoadError` when it is not a
    complete GGUF this reader (and llama.cpp) can read."""
    try:
        with open(path, "rb") as file:
            return _Parser(path, file).parse()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc


class _Parser:
    """One pass over the header; ``buf`` holds the block of the file around ``pos``."""

    def __init__(self, path: Path, file: BufferedReader) -> None:
        self.path = path
        self.file = file
        self.size = os.fstat(file.fileno()).st_size
        self.buf = b""
        self.start = 0  # file offset of buf[0]
        self.pos = 0  # file offset of the next byte to parse
        self.where = "the file header"

    # Errors ------------------------------------------------------------------------------

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"cannot read GGUF metadata of {self.path}: {what}")

    def truncated(self, missing: int) -> ModelLoadError:
        return self.fail(
            f"the file is truncated: it ends at byte {self.size}, {missing} bytes short"
            f" (in {self.where})"
        )

    # Bytes -------------------------------------------------------------------------------

    def take(self, n: int) -> int:
        """Make the ``n`` bytes at ``pos`` available in ``buf``: returns their index there and
        moves ``pos`` past them."""
        index = self.pos - self.start
        if index + n > len(self.buf):
            self.fill(n)
            index = 0
        self.pos += n
        return index

    def fill(self, n: int) -> None:
        if self.pos + n > self.size:
            raise self.truncated(self.pos + n - self.size)
        self.file.seek(self.pos)
        data = self.file.read(max(n, min(_BLOCK, self.size - self.pos)))
        if len(data) < n:  # the file shrank while we read it
            raise self.truncated(n - len(data))
        self.buf = data
        self.start = self.pos

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise self.truncated(self.pos + n - self.size)
        self.pos += n

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        index = self.take(fmt.size)  # first: it may replace buf
        return fmt.unpack_from(self.buf, index)

    def u32(self) -> int:
        value: int = self.unpack(_U32)[0]
        return value

    def u64(self) -> int:
        value: int = self.unpack(_U64)[0]
        return value

    def string(self, limit: int, what: str) -> bytes:
        length = self.u64()
        if length > limit:
            raise self.fail(f"{what} is {length} bytes long (more than {limit} is refused)")
        index = self.take(length)
        return self.buf[index : index + length]

    def skip_strings(self, count: int) -> int:
        """Skip ``count`` strings by their lengths, a block at a time; returns how many were
        empty."""
        unpack = _U64.unpack_from
        empty = 0
        while count:
            buf, index, done = self.buf, self.pos - self.start, 0
            try:
                # The hot loop (~60 ns a string); ``done`` says where an exception stopped it.
                for done in range(count):  # noqa: B007
                    length = unpack(buf, index)[0]
                    empty += not length
                    index += 8 + length
                done = count
            except struct.error:  # the block ends before this string's length
                pass
            count -= done
            self.pos = self.start + index
            if self.pos > self.size:
                raise self.truncated(self.pos - self.size)
            if count:
                self.fill(8)
        return empty

    # Structure ---------------------------------------------------------------------------

    def parse(self) -> GGUFHeader:
        if self.size == 0:
            raise self.fail("not a GGUF file (it is empty)")
        self.fill(min(self.size, _HEADER_BYTES))
        if self.buf[:4] != MAGIC:
            raise self.fail(
                f"not a GGUF file (it starts with {self.buf[:4]!r}, not the magic {MAGIC!r})"
            )
        self.skip(4)
        version = self.u32()
        self.check_version(version)
        n_tensors = self.u64()
        n_kv = self.u64()
        if n_kv > MAX_KEY_VALUES or n_tensors > MAX_TENSORS:
            raise self.fail(
                f"the header declares {n_kv} key/values and {n_tensors} tensors (at most"
                f" {MAX_KEY_VALUES} and {MAX_TENSORS} are read)"
            )
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > self.size - self.pos:
            raise self.fail(
                f"the header declares {n_kv} key/values and {n_tensors} tensors, more than a"
                f" file of {self.size} bytes can hold (truncated or corrupt)"
            )
        self.numbers: dict[str, float] = {}
        self.array_lengths: dict[str, int] = {}
        self.empty_strings: dict[str, int] = {}
        values, alignment = self.key_values(n_kv)
        parameters, data_size = self.tensor_infos(n_tensors, alignment)
        data_offset = _pad(self.pos, alignment)
        data_end = data_offset + data_size
        if data_end > self.size:
            self.where = "the tensor data"
            raise self.truncated(data_end - self.size)
        return GGUFHeader(
            version=version,
            values=values,
            tensor_count=n_tensors,
            parameter_count=parameters,
            alignment=alignment,
            data_offset=data_offset,
            data_end=data_end,
            numbers=self.numbers,
            array_lengths=self.array_lengths,
            empty_strings=self.empty_strings,
        )

    def check_version(self, version: int) -> None:
        if version in VERSIONS:
            return
        if version and version & 0xFFFF == 0:  # llama.cpp's test: a version byte-swapped
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            raise self.fail(
                f"a big-endian GGUF (version {swapped}); only little-endian files are read"
            )
        if version == 1:
            raise self.fail("GGUF version 1 is no longer supported (only versions 2 and 3)")
        raise self.fail(f"unknown GGUF version {version} (only versions 2 and 3 are read)")

    def key_values(self, count: int) -> tuple[dict[str, str], int]:
        values: dict[str, str] = {}
        seen: set[bytes] = set()
        alignment = DEFAULT_ALIGNMENT
        for number in range(count):
            self.where = f"key/value {number}"
            raw_key = self.string(MAX_KEY_BYTES, f"the key of key/value {number}")
            key = _c_string(raw_key)
            if not raw_key:
                raise self.fail(f"key/value {number} has an empty key")
            if raw_key in seen:
                raise self.fail(f"the key {key!r} appears twice")
            seen.add(raw_key)
            self.where = f"the value of {key!r}"
            kind = self.u32()
            if kind == _ARRAY:
                self.skip_array(key, 1)
                continue
            if key == "general.alignment":
                if kind != _UINT32:
                    name = _TYPE_NAMES.get(kind, f"value of unknown type {kind}")
                    raise self.fail(f"general.alignment is a {name}, not a uint32")
                alignment = self.u32()
                if alignment == 0 or alignment & (alignment - 1):
                    raise self.fail(f"general.alignment {alignment} is not a power of 2")
                values.setdefault(key, str(alignment))
                continue
            # setdefault: two keys equal up to a NUL keep the first value, as in llama.cpp
            values.setdefault(key, self.scalar(key, kind))
        return values, alignment

    def scalar(self, key: str, kind: int) -> str:
        if kind == _STRING:
            return _c_string(self.string(MAX_STRING_BYTES, f"the value of {key!r}"))
        try:
            fmt, render = _SCALARS[kind]
        except KeyError:
            raise self.fail(f"the value of {key!r} has an unknown type {kind}") from None
        raw = self.unpack(fmt)[0]
        self.numbers.setdefault(key, raw)
        return render(raw)

    def skip_array(self, key: str, depth: int) -> None:
        kind = self.u32()
        count = self.u64()
        if depth == 1:
            self.array_lengths.setdefault(key, count)
        room = self.size - self.pos
        if kind == _STRING:
            if count * 8 > room:
                raise self.fail(
                    f"{key!r} declares {count} strings, more than the {room} bytes left can hold"
                    " (truncated or corrupt)"
                )
            empty = self.skip_strings(count)
            if depth == 1:
                self.empty_strings.setdefault(key, empty)
        elif kind == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise self.fail(f"{key!r} nests arrays more than {MAX_ARRAY_DEPTH} deep")
            if count * _ARRAY_HEAD_BYTES > room:
                raise self.fail(
                    f"{key!r} declares {count} arrays, more than the {room} bytes left can hold"
                    " (truncated or corrupt)"
                )
            for _ in range(count):
                self.skip_array(key, depth + 1)
        elif kind in _SCALARS:
            size = _SCALARS[kind][0].size
            if count * size > room:
                raise self.fail(
                    f"{key!r} declares {count} {_TYPE_NAMES[kind]} values ({count * size}"
                    f" bytes), more than the {room} bytes left (truncated or corrupt)"
                )
            self.skip(count * size)
        else:
            raise self.fail(f"{key!r} is an array of an unknown type {kind}")

    def tensor_infos(self, count: int, alignment: int) -> tuple[int, int]:
        """(parameters, where the last tensor's data ends, from the start of the data)."""
        parameters = 0
        expected = 0  # llama.cpp wants the tensors in order, each aligned, with no gaps
        end = 0
        for number in range(count):
            self.where = f"tensor info {number}"
            name = _c_string(self.string(MAX_KEY_BYTES, f"the name of tensor {number}"))
            self.where = f"the info of tensor {name!r}"
            n_dims = self.u32()
            if n_dims > MAX_DIMS:
                raise self.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
            dims: tuple[int, ...] = self.unpack(_DIMS[n_dims])
            kind = self.u32()
            offset = self.u64()
            elements = math.prod(dims)
            if any(d >= 1 << 63 for d in dims) or elements >= 1 << 63:
                raise self.fail(f"tensor {name!r} has an impossible shape {list(dims)}")
            try:
                block, block_bytes = GGML_TYPE_SIZES[kind]
            except KeyError:
                raise self.fail(f"tensor {name!r} has an unknown ggml type {kind}") from None
            row = dims[0] if dims else 1
            if row % block:
                raise self.fail(
                    f"tensor {name!r} has rows of {row} elements, not a multiple of its"
                    f" type's block of {block}"
                )
            if offset != expected:
                raise self.fail(
                    f"tensor {name!r} starts at data offset {offset}, expected {expected}"
                    f" (tensors are stored in order, aligned to {alignment} bytes)"
                )
            size = elements // block * block_bytes
            end = offset + size
            expected = _pad(end, alignment)
            parameters += elements
        return parameters, end


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _c_string(raw: bytes) -> str:
    """As llama.cpp hands a string out through a C buffer: up to the first NUL."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
