"""Hostile GGUF headers are refused before llama.cpp sees them (llama.cpp aborts the process on
a layer count of 0, and misbehaves on NaN epsilons or an empty vocabulary): at import, with the
user's path in the message and nothing left in the store; at load, for a file that is in the
store already; and a ``num_ctx`` above what the model was trained for is refused before a load.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from providers import Config, GenerationOptions, InvalidRequest, ModelLoadError, ModelSpec
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.metadata import read_metadata
from tests.gguf_files import TOKENS, tiny_writer, write_out

HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "no layers": ({"block_count": 0}, "llama.block_count is 0 (a model has 1 to 512 layers)"),
    "2^32-1 layers": ({"block_count": 2**32 - 1}, "llama.block_count is 4294967295"),
    "NaN epsilon": (
        {"rms_eps": math.nan},
        "llama.attention.layer_norm_rms_epsilon is nan (it must be a finite number above 0)",
    ),
    "zero epsilon": ({"rms_eps": 0.0}, "layer_norm_rms_epsilon is 0.0"),
    "empty vocabulary": ({"tokens": []}, "the model has no vocabulary"),
    "tokens of empty strings": ({"tokens": [""] * 29}, "29 of the 29 tokens"),
}


def hostile_gguf(path: Path, **overrides: Any) -> Path:
    import numpy as np

    writer = tiny_writer(path, "hostile", **overrides)
    writer.add_tensor("token_embd.weight", np.zeros((max(len(TOKENS), 1), 8), dtype="f4"))
    write_out(writer)
    return path


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    # The files here are headers with a token table, not models: no probe load at import.
    options = {"model_directory": str(tmp_path / "models"), "check_imports": False}
    made = LlamaCppBackend(Config.from_dict({"providers": {"llamacpp": {"options": options}}}))
    yield made
    made.close()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_header_is_refused_at_import_naming_the_users_file(
    case: str, tmp_path: Path, backend: LlamaCppBackend
) -> None:
    overrides, reason = HOSTILE[case]
    source = hostile_gguf(tmp_path / "upload.gguf", **overrides)
    with pytest.raises(ModelLoadError) as refused:
        backend.import_model(source, "hostile")
    assert str(source) in refused.value.message and reason in refused.value.message
    assert backend.list_models() == []
    assert not list((tmp_path / "models").rglob("*.gguf*"))


def test_a_hostile_file_already_in_the_store_is_refused_at_load(
    tmp_path: Path, backend: LlamaCppBackend
) -> None:
    source = hostile_gguf(tmp_path / "old.gguf", block_count=0)
    # As a store written before this check would hold it: imported without looking.
    backend.store.import_file(source, "old-import", link=False, inspect=None)
    assert [m.id for m in backend.list_models()] == ["old-import"]  # listing still works
    with pytest.raises(ModelLoadError, match=r"old-import: llama\.block_count is 0"):
        backend.load(ModelSpec.parse("old-import"))
    assert backend.loaded() == []


def test_num_ctx_above_the_trained_context_is_refused_before_a_load(
    tmp_path: Path, backend: LlamaCppBackend
) -> None:
    backend.import_model(hostile_gguf(tmp_path / "fine.gguf"), "tiny")
    assert read_metadata(backend.store.get("tiny").path).context_length == 64  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest, match="num_ctx 65 is more than tiny's context length 64"):
        backend.complete(ModelSpec.parse("tiny"), "hi", GenerationOptions(num_ctx=65))
    assert backend.load_count == 0
