"""providers.llamacpp.gguf_header: the pure-Python GGUF header reader behind read_metadata.

The oracle is llama.cpp itself (:func:`llama_cpp_header`, the "vocab only" read metadata.py used
before): the reader's values and parameter count must equal what llama.cpp gives for the real
Gemma file and for small GGUFs holding every value type. Files llama.cpp cannot be asked about
(nested arrays, versions, hostile counts, truncations) are built by hand with struct.
"""

from __future__ import annotations

import ctypes
import math
import struct
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from providers.config import Config
from providers.errors import ModelLoadError
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.gguf_header import GGML_TYPE_SIZES, GGUFHeader, read_header
from providers.llamacpp.metadata import read_metadata
from providers.spec import ModelSpec
from tests.gguf_files import TOKENS, tiny_writer, write_out

# --- the oracle -------------------------------------------------------------------------------


def llama_cpp_header(path: Path) -> tuple[dict[str, str], int]:
    """(meta key/values, n_params) as llama.cpp reads them with a vocab-only load; llama.cpp's
    meta map holds the header's scalar key/values rendered as strings."""
    from providers.llamacpp.native import prepare_llama_cpp

    prepare_llama_cpp()
    from llama_cpp import llama_cpp as native

    native.llama_backend_init()
    params = native.llama_model_default_params()
    params.vocab_only = True
    model = native.llama_model_load_from_file(str(path).encode("utf-8"), params)
    assert model, f"llama.cpp cannot read {path}"
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
        return values, int(native.llama_model_n_params(model))
    finally:
        native.llama_model_free(model)


# --- files ------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FORMATS = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def value(kind: int, item: object) -> bytes:
    """The encoding of one value of ``kind``; an array is ``(element kind, [items])``."""
    if kind == STR:
        assert isinstance(item, str | bytes)
        return gstr(item)
    if kind == ARR:
        assert isinstance(item, tuple)
        element, items = item
        return struct.pack("<IQ", element, len(items)) + b"".join(value(element, i) for i in items)
    return struct.pack(FORMATS[kind], item)


def kv(key: str | bytes, kind: int, item: object) -> bytes:
    return gstr(key) + struct.pack("<I", kind) + value(kind, item)


def tensor(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return (
        gstr(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def gguf(
    kvs: Sequence[bytes],
    tensors: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    counts: tuple[int, int] | None = None,
    alignment: int = 32,
) -> bytes:
    """A GGUF file: header, key/values, tensor infos, padding to ``alignment``, data."""
    n_tensors, n_kv = counts if counts is not None else (len(tensors), len(kvs))
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + b"".join(kvs)
    head += b"".join(tensors)
    return head + b"\0" * (-len(head) % alignment) + data


def small_model() -> bytes:
    """Strings, numbers, a bool, arrays of strings and numbers, and two F32 tensors (the last
    one ends the file exactly: any shorter prefix is missing bytes)."""
    kvs = [
        kv("general.architecture", STR, "llama"),
        kv("general.name", STR, "tiny"),
        kv("u8", U8, 255),
        kv("i64", I64, -(2**63)),
        kv("f32", F32, 0.1),
        kv("flag", BOOL, True),
        kv("tokens", ARR, (STR, ["<s>", "", "ü" * 40])),
        kv("scores", ARR, (F32, [0.5, 1.5])),
        kv("empty", ARR, (U32, [])),
        kv("general.alignment", U32, 32),
    ]
    tensors = [tensor("a.weight", [3, 2], 0, 0), tensor("b.weight", [8], 0, 32)]
    data = bytes(range(24)) + b"\0" * 8 + bytes(range(32))
    return gguf(kvs, tensors, data)


def write(tmp_path: Path, content: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def refused(path: Path, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match) as caught:
        read_header(path)
    assert str(path) in str(caught.value)


def writer_model(path: Path, architecture: str = "llama", extra: bool = True) -> Path:
    """A GGUF written by the gguf package, which llama.cpp reads vocab-only (a llama model with
    a 29-token vocabulary), with a key of every value type when ``extra``."""
    import gguf as gguf_package
    import numpy as np

    writer = tiny_writer(path, "all-types", architecture)
    if extra:
        writer.add_uint8("test.u8", 255)
        writer.add_uint8("test.u8.zero", 0)
        writer.add_int8("test.i8", -128)
        writer.add_uint16("test.u16", 65535)
        writer.add_int16("test.i16", -32768)
        writer.add_uint32("test.u32", 2**32 - 1)
        writer.add_int32("test.i32", -(2**31))
        writer.add_uint64("test.u64", 2**64 - 1)
        writer.add_int64("test.i64", -(2**63))
        floats32 = {
            "tenth": 0.1,
            "neg": -2.5,
            "tiny": 1e-7,
            "denormal": 1e-40,
            "big": 3.4e38,
            "inf": math.inf,
            "ninf": -math.inf,
            "nan": math.nan,
            "nnan": -math.nan,
            "nzero": -0.0,
            "round": 2.0000005,
        }
        for key, number in floats32.items():
            writer.add_float32(f"test.f32.{key}", number)
        for key, number in {"tenth": 0.1, "big": 1e300, "tiny": 1e-300, "third": 1 / 3}.items():
            writer.add_float64(f"test.f64.{key}", number)
        writer.add_bool("test.true", True)
        writer.add_bool("test.false", False)
        writer.add_string("test.unicode", "héllo ✓ 日本")
        writer.add_string("test.empty", "")
        writer.add_string("test.nul", "before\0after")
        writer.add_string("test.long", "x" * 10_000)
        string = gguf_package.GGUFValueType.STRING
        writer.add_key_value("test.bad_utf8", b"\xff\xfeok\xc3", string)
        writer.add_key_value("test.key\0with_nul", "v", string)
        writer.add_array("test.array.int", [1, 2, 3])
        writer.add_array("test.array.float", [0.5, 1.5])
        writer.add_array("test.array.str", ["a", "", "ccc"])
        writer.add_array("test.array.bool", [True, False])
        writer.add_array("test.array.empty", [])
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((len(TOKENS), 8)).astype("f4"))
    writer.add_tensor("filler.weight", rng.standard_normal((256,)).astype("f4"))
    writer.add_tensor("half.weight", rng.standard_normal((4, 32)).astype("f2"))
    write_out(writer)
    return path


# --- against llama.cpp --------------------------------------------------------------------------


@pytest.mark.model
def test_real_model_reads_as_llama_cpp_reads_it(gemma_path: Path) -> None:
    header = read_header(gemma_path)
    values, n_params = llama_cpp_header(gemma_path)
    assert header.values == values
    assert header.parameter_count == n_params == 268_098_176
    assert header.version == 3 and header.tensor_count == 236
    assert header.data_end == gemma_path.stat().st_size  # the last tensor ends the file
    metadata = read_metadata(gemma_path)
    assert metadata.values == values
    assert (metadata.parameter_count, metadata.quantization) == (n_params, "Q4_K_M")


@pytest.mark.model
def test_real_model_cut_short_is_truncated(gemma_path: Path, tmp_path: Path) -> None:
    """Copies of the Gemma header with the data (sparse) one byte short, and cut in the
    tokenizer: no 253 MB copy needed."""
    header = read_header(gemma_path)
    with gemma_path.open("rb") as source:
        head = source.read(header.data_offset)
    short = write(tmp_path, head, "short.gguf")
    with short.open("r+b") as file:
        file.truncate(header.data_end - 1)
    refused(short, r"truncated: it ends at byte \d+, 1 bytes short \(in the tensor data\)")
    with short.open("r+b") as file:
        file.truncate(header.data_end)
    assert read_header(short).values == header.values
    cut = write(tmp_path, head[:3_000_000], "cut.gguf")  # inside tokenizer.ggml.tokens
    refused(cut, "truncated.*tokenizer.ggml.tokens")


def test_every_value_type_renders_as_llama_cpp_renders_it(tmp_path: Path) -> None:
    path = writer_model(tmp_path / "types.gguf")
    values, n_params = llama_cpp_header(path)
    header = read_header(path)
    assert header.values == values
    assert header.parameter_count == n_params == 29 * 8 + 256 + 4 * 32
    # spot checks of what the rules give (the equality above is the real test)
    assert header.values["test.f32.tenth"] == "0.100000"
    assert header.values["test.f32.nnan"] == "-nan"
    assert header.values["test.u64"] == str(2**64 - 1)
    assert header.values["test.nul"] == "before"
    assert header.values["test.bad_utf8"] == "\ufffd\ufffdok\ufffd"
    assert header.values["test.key"] == "v"
    assert not any(key.startswith("test.array") for key in header.values)


def test_version_2_reads_like_version_3(tmp_path: Path) -> None:
    content = bytearray(writer_model(tmp_path / "v3.gguf").read_bytes())
    content[4:8] = struct.pack("<I", 2)
    v2 = write(tmp_path, bytes(content), "v2.gguf")
    header = read_header(v2)
    assert header.version == 2
    assert header.values == read_header(tmp_path / "v3.gguf").values
    assert (header.values, header.parameter_count) == llama_cpp_header(v2)


def test_tables_match_the_gguf_package() -> None:
    import gguf as gguf_package

    from providers.llamacpp.metadata import _FILE_TYPES, quantization_of

    assert GGML_TYPE_SIZES == {int(t): s for t, s in gguf_package.GGML_QUANT_SIZES.items()}
    expected = {
        int(t): t.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        for t in gguf_package.LlamaFileType
        if t.name != "GUESSED"
    }
    assert expected == _FILE_TYPES
    assert quantization_of("15") == "Q4_K_M"
    assert quantization_of("1024", "x-Q8_0.gguf") == "Q8_0"  # GUESSED: the file name says


# --- structure ----------------------------------------------------------------------------------


def test_small_hand_built_file(tmp_path: Path) -> None:
    header = read_header(write(tmp_path, small_model()))
    assert header == GGUFHeader(
        version=3,
        values={
            "general.architecture": "llama",
            "general.name": "tiny",
            "u8": "255",
            "i64": str(-(2**63)),
            "f32": "0.100000",
            "flag": "true",
            "general.alignment": "32",
        },
        tensor_count=2,
        parameter_count=6 + 8,
        alignment=32,
        data_offset=header.data_offset,
        data_end=header.data_offset + 64,
    )
    assert header.data_offset % 32 == 0
    # the numbers as read, for the checks that rendered text would blur (hparams)
    assert header.numbers["u8"] == 255 and header.numbers["f32"] == pytest.approx(0.1)


def test_array_lengths_and_empty_strings_are_counted(tmp_path: Path) -> None:
    words = (STR, ["a", "", "bc", ""])
    path = write(tmp_path, gguf([kv("words", ARR, words), kv("nums", ARR, (U32, [1, 2, 3]))]))
    header = read_header(path)
    assert header.array_lengths == {"words": 4, "nums": 3}
    assert header.empty_strings == {"words": 2}


def test_nested_arrays_are_skipped(tmp_path: Path) -> None:
    """The spec allows arrays of arrays (llama.cpp refuses them when it loads the file)."""
    nested = (ARR, [(U32, [1, 2]), (STR, ["a", "bc"]), (ARR, [(U8, [7])])])
    path = write(tmp_path, gguf([kv("nested", ARR, nested), kv("after", STR, "ok")]))
    assert read_header(path).values == {"after": "ok"}
    deep: tuple[int, list[object]] = (U8, [1])
    for _ in range(8):
        deep = (ARR, [deep])
    refused(write(tmp_path, gguf([kv("deep", ARR, deep)])), "'deep' nests arrays more than 8")


def test_custom_alignment(tmp_path: Path) -> None:
    kvs = [kv("general.alignment", U32, 64)]
    content = gguf(kvs, [tensor("t", [16], 0, 0)], b"\1" * 64, alignment=64)
    header = read_header(write(tmp_path, content))
    assert (header.alignment, header.data_offset % 64, header.data_end) == (64, 0, len(content))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"not a GGUF file \(it is empty\)"),
        (b"GG", "not a GGUF file"),
        (b"PK\3\4" + b"\0" * 100, r"not a GGUF file \(it starts with b'PK\\x03\\x04'"),
        (gguf([], version=1), "GGUF version 1 is no longer supported"),
        (gguf([], version=0), "unknown GGUF version 0"),
        (gguf([], version=4), "unknown GGUF version 4"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), r"a big-endian GGUF \(version 3\)"),
        (gguf([], counts=(0, 2**64 - 1)), "declares 18446744073709551615 key/values"),
        (gguf([], counts=(2**40, 0)), "1099511627776 tensors"),
        (gguf([], counts=(0, 50)), "more than a file of 32 bytes can hold"),
        (
            gguf([struct.pack("<Q", 2**64 - 1) + b"k" * 16]),
            "the key of key/value 0 is 18446744073709551615 bytes long",
        ),
        (gguf([gstr("k") + struct.pack("<IQ", STR, 2**40)]), "the value of 'k' is 1099511627776"),
        (gguf([gstr("k") + struct.pack("<IQ", STR, 100)]), "truncated.*the value of 'k'"),
        (
            gguf([gstr("k") + struct.pack("<IIQ", ARR, STR, 2**62)]),
            "'k' declares 4611686018427387904",
        ),
        (
            gguf([gstr("k") + struct.pack("<IIQ", ARR, U64, 2**61)]),
            "'k' declares 2305843009213693952",
        ),
        (
            gguf([gstr("k") + struct.pack("<IIQ", ARR, ARR, 2**60)]),
            "'k' declares 1152921504606846976",
        ),
        (
            gguf([gstr("k") + struct.pack("<IIQ", ARR, 13, 1)]),
            "'k' is an array of an unknown type 13",
        ),
        (gguf([gstr("k") + struct.pack("<II", 13, 0)]), "the value of 'k' has an unknown type 13"),
        (gguf([kv("", U8, 1)]), "key/value 0 has an empty key"),
        (gguf([kv("a", U8, 1), kv("a", U8, 2)]), "the key 'a' appears twice"),
        (gguf([kv("general.alignment", U64, 32)]), "general.alignment is a uint64, not a uint32"),
        (gguf([kv("general.alignment", U32, 48)]), "general.alignment 48 is not a power of 2"),
        (gguf([kv("general.alignment", U32, 0)]), "general.alignment 0 is not a power of 2"),
        (gguf([], [tensor("t", [1] * 5, 0, 0)]), "tensor 't' has 5 dimensions"),
        (gguf([], [tensor("t", [4], 99, 0)], b"\0" * 32), "tensor 't' has an unknown ggml type 99"),
        (gguf([], [tensor("t", [2**63, 2], 0, 0)]), "tensor 't' has an impossible shape"),
        (gguf([], [tensor("t", [2**32, 2**32], 0, 0)]), "tensor 't' has an impossible shape"),
        (gguf([], [tensor("t", [100], 12, 0)]), "rows of 100 elements, not a multiple .* 256"),
        (
            gguf([], [tensor("t", [8], 0, 32)], b"\0" * 64),
            "'t' starts at data offset 32, expected 0",
        ),
        (
            gguf([], [tensor("a", [1], 0, 0), tensor("b", [1], 0, 4)], b"\0" * 64),
            "'b' starts at data offset 4, expected 32",
        ),
        (
            gguf([], [tensor("t", [1024], 0, 0)], b"\0" * 4095),
            r"1 bytes short \(in the tensor data",
        ),
    ],
    ids=lambda item: item if isinstance(item, str) else "file",
)
def test_bad_files_are_refused_with_what_is_wrong(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = write(tmp_path, content)
    tracemalloc.start()
    try:
        refused(path, match)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated for a {len(content)}-byte file"


def test_real_big_endian_file_is_refused(tmp_path: Path) -> None:
    import gguf as gguf_package
    import numpy as np

    path = tmp_path / "be.gguf"
    writer = gguf_package.GGUFWriter(str(path), "llama", endianess=gguf_package.GGUFEndian.BIG)
    writer.add_tensor("t", np.zeros(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    refused(path, r"a big-endian GGUF \(version 3\); only little-endian files are read")


def cut_errors(tmp_path: Path, content: bytes, lengths: Iterator[int] | range) -> list[str]:
    """Write each prefix of ``content``; what went otherwise than a ModelLoadError naming the
    file (and saying "truncated" once the 24-byte header is there)."""
    path = tmp_path / "cut.gguf"
    problems = []
    for length in lengths:
        path.write_bytes(content[:length])
        try:
            read_header(path)
        except ModelLoadError as exc:
            message = str(exc)
            if not message.startswith(f"cannot read GGUF metadata of {path}: "):
                problems.append(f"cut at {length}: {message}")
            elif length >= 24 and "truncated" not in message:
                problems.append(f"cut at {length}: {message}")
        else:
            problems.append(f"cut at {length}: read as a whole file")
    return problems


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    content = small_model()
    read_header(write(tmp_path, content))
    assert cut_errors(tmp_path, content, range(len(content))) == []


def test_every_truncation_of_a_gguf_package_file_is_refused(tmp_path: Path) -> None:
    """The same for a file of the gguf package: every offset of its header, every 16th of
    its data (its last tensor ends the file)."""
    content = writer_model(tmp_path / "full.gguf", extra=False).read_bytes()
    header = read_header(tmp_path / "full.gguf")
    assert header.data_end == len(content)
    lengths = [*range(header.data_offset + 1), *range(header.data_offset + 1, len(content), 16)]
    assert cut_errors(tmp_path, content, iter([*lengths, len(content) - 1])) == []


@pytest.mark.parametrize("make", ["directory", "missing"])
def test_unreadable_paths(tmp_path: Path, make: str) -> None:
    path = tmp_path / "x.gguf"
    if make == "directory":
        path.mkdir()
    with pytest.raises(ModelLoadError, match=f"cannot read {path}: "):
        read_header(path)
    with pytest.raises(ModelLoadError, match="cannot read GGUF metadata of /proc/self/mem: not a"):
        read_header(Path("/proc/self/mem"))  # its size says 0 bytes


def test_a_file_growing_a_tail_still_reads(tmp_path: Path) -> None:
    """Bytes after the last tensor (llama.cpp ignores them) are allowed."""
    path = write(tmp_path, small_model() + b"trailing")
    assert read_header(path).parameter_count == 14


def test_read_metadata_uses_the_reader_and_caches(tmp_path: Path) -> None:
    path = writer_model(tmp_path / "cached.gguf", extra=False)
    first = read_metadata(path)
    assert first is read_metadata(path)
    assert (first.architecture, first.quantization, first.context_length) == ("llama", "Q4_K_M", 64)
    assert first.parameter_count == read_header(path).parameter_count


# --- architectures llama.cpp does not know ------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LlamaCppBackend]:
    config = Config.from_dict(
        {"providers": {"llamacpp": {"options": {"model_directory": str(tmp_path / "models")}}}}
    )
    backend = LlamaCppBackend(config)
    try:
        yield backend
    finally:
        backend.close()


def test_unknown_architecture_is_refused_at_import_saying_why(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    """The probe load at import finds what this llama.cpp cannot run, names the user's file
    and the architecture, and keeps nothing (a newer llama-cpp-python may run it: import it
    again then)."""
    path = writer_model(tmp_path / "mystery.gguf", architecture="mystery", extra=False)
    with pytest.raises(ModelLoadError, match="unknown model architecture: 'mystery'") as caught:
        backend.import_model(path, "mystery")
    assert str(path) in caught.value.message and "llama-cpp-python" in caught.value.message
    assert "not imported" in caught.value.message
    assert backend.list_models() == []


def test_a_model_llama_cpp_cannot_build_says_why(backend: LlamaCppBackend, tmp_path: Path) -> None:
    """A known architecture with tensors missing: llama.cpp's own reason, not just "failed",
    at import (the probe load) and at load, for a file that is in the store already."""
    path = writer_model(tmp_path / "partial.gguf", extra=False)
    with pytest.raises(ModelLoadError, match=r"tensor 'output_norm\.weight' not found"):
        backend.import_model(path, "partial")
    assert backend.list_models() == []
    backend.store.import_file(path, "partial", inspect=None)  # as an older llmspell stored it
    with pytest.raises(ModelLoadError, match=r"tensor 'output_norm\.weight' not found"):
        backend.load(ModelSpec.parse("partial"))
    assert backend.loaded() == []
