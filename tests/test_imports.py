"""Imports (issue 21, item 4): a GGUF whose tensor data is garbage is refused at its first load
with a clear error (it used to import, then generate nothing and exit 0); importing a directory
says it is one; ``import --link`` links the file in place through the protocol and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmspell_kernel.protocol import validate
from llmspell_kernel.protocol.requests import ImportRequest
from providers.errors import InvalidRequest, ModelLoadError
from providers.llamacpp.gguf_header import read_header
from providers.spec import ModelSpec
from tests.cli_fixtures import invoke, json_of
from tests.test_llamacpp_model import make_backend


def nan_copy(source: Path, dest: Path) -> Path:
    """``source`` with every byte of its tensor data 0xFF: NaN as f16 and f32, NaN scales in
    the quantized blocks. The header and metadata are untouched, so it reads as a valid GGUF."""
    shutil.copyfile(source, dest)
    start = read_header(source).data_offset
    left = source.stat().st_size - start
    block = b"\xff" * (1 << 20)
    with dest.open("r+b") as file:
        file.seek(start)
        while left > 0:
            left -= file.write(block[: min(left, len(block))])
    return dest


@pytest.fixture(scope="module")
def broken_gguf(tmp_path_factory: pytest.TempPathFactory, gemma_path: Path) -> Path:
    return nan_copy(gemma_path, tmp_path_factory.mktemp("broken") / "broken.gguf")


@pytest.mark.model
def test_garbage_tensor_data_is_refused_at_import_and_at_the_first_load(
    tmp_path: Path, broken_gguf: Path
) -> None:
    backend = make_backend(tmp_path / "models")
    try:
        with pytest.raises(ModelLoadError, match="tensor data is corrupt") as refused:
            backend.import_model(broken_gguf, "broken", link=True)
        assert str(broken_gguf) in refused.value.message and "not imported" in refused.value.message
        assert "model remove" not in refused.value.message  # nothing to remove
        assert backend.list_models() == []
        # A file an older llmspell stored without the probe fails its first load.
        backend.store.import_file(broken_gguf, "broken", inspect=None)
        with pytest.raises(ModelLoadError, match="tensor data is corrupt") as raised:
            backend.load(ModelSpec.parse("broken"))
        assert "llmspell model remove broken@llamacpp" in str(raised.value)
        assert backend.loaded() == []
    finally:
        backend.close()


@pytest.mark.model
def test_the_good_model_passes_the_load_check(tmp_path: Path, gemma_path: Path) -> None:
    backend = make_backend(tmp_path / "models")
    try:
        backend.import_model(gemma_path, "gemma", link=True)
        assert backend.load(ModelSpec.parse("gemma")).id == "gemma"
    finally:
        backend.close()


@pytest.mark.model
def test_prompt_on_a_corrupt_import_is_an_error_not_empty_text(
    tmp_path: Path, broken_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    monkeypatch.setenv("LLMSPELL_MODELS", str(models))
    imported = invoke(["--output", "json", "model", "import", str(broken_gguf), "-n", "broken"])
    assert imported.exit_code == 1
    error = json.loads(imported.stdout)["error"]
    assert error["ename"] == "ModelLoadError"
    assert "tensor data is corrupt" in error["evalue"] and "not imported" in error["evalue"]
    # As an older llmspell stored it, without the probe load:
    from providers.llamacpp.store import ModelStore

    ModelStore(models).import_file(broken_gguf, "broken", inspect=None)
    prompted = invoke(["prompt", "-m", "broken@llamacpp", "--max-tokens", "4", "hi"])
    assert prompted.exit_code == 1
    assert prompted.stdout == ""
    assert "tensor data is corrupt" in prompted.stderr


def test_importing_a_directory_says_it_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    folder = tmp_path / "downloads"
    folder.mkdir()
    result = invoke(["model", "import", str(folder)])
    assert result.exit_code == 1
    assert f"{folder} is a directory" in result.stderr
    assert "no such file" not in result.stderr


@pytest.mark.model
def test_import_link_links_the_file_in_place(
    tmp_path: Path, gemma_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    monkeypatch.setenv("LLMSPELL_MODELS", str(models))
    source = tmp_path / "gemma.gguf"
    shutil.copyfile(gemma_path, source)  # on the store's file system, so a hard link works
    result = invoke(["--output", "json", "model", "import", str(source), "-n", "g", "--link"])
    assert result.exit_code == 0, result.stderr
    stored = Path(json_of(result)["model"]["details"]["path"])
    assert stored.stat().st_ino == source.stat().st_ino  # the same file: nothing was copied
    assert "--link" in invoke(["model", "import", "--help"]).stdout


def test_the_protocol_carries_link_as_a_strict_bool() -> None:
    request = validate(ImportRequest, {"path": "/m.gguf", "link": True})
    assert request.link is True
    assert validate(ImportRequest, {"path": "/m.gguf"}).link is False
    with pytest.raises(InvalidRequest, match="link"):
        validate(ImportRequest, {"path": "/m.gguf", "link": "yes"})
