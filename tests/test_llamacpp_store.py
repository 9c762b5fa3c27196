"""The llamacpp model store: ids, listing, import, removal, lookup rules. No model is loaded."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers import (
    Config,
    InvalidModelSpec,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    ModelSpec,
)
from providers.llamacpp import LlamaCppBackend
from providers.llamacpp.ids import id_from_file
from providers.llamacpp.store import MANIFEST_NAME, ModelStore
from providers.types import Removed


def fake_gguf(path: Path, payload: bytes = b"weights") -> Path:
    """A file with the GGUF magic (enough for the store, which does not parse it)."""
    path.write_bytes(b"GGUF" + payload)
    return path


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file under ``root`` with its content (symlinks as their target)."""
    result: dict[str, bytes | str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            result[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_bytes()
    return result


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LlamaCppBackend]:
    config = Config.from_dict(
        {"providers": {"llamacpp": {"options": {"model_directory": str(tmp_path / "models")}}}}
    )
    backend = LlamaCppBackend(config)
    yield backend
    backend.close()


def test_import_lists_and_records_a_manifest(store: ModelStore, tmp_path: Path) -> None:
    source = fake_gguf(tmp_path / "My-Model.Q4_K_M.gguf")
    model = store.import_file(source, "mine:q4", inspect=lambda p: {"quantization": "Q4_K_M"})
    assert model.id == "mine:q4"
    assert model.path.read_bytes() == source.read_bytes()
    assert model.path.parent.parent == store.root
    manifest = json.loads((model.folder / MANIFEST_NAME).read_text())
    assert manifest["id"] == "mine:q4"
    assert manifest["source"] == "import"
    assert manifest["size"] == source.stat().st_size
    assert len(manifest["sha256"]) == 64
    assert manifest["imported_at"].endswith("Z")
    assert manifest["quantization"] == "Q4_K_M"
    assert [m.id for m in store.list()] == ["mine:q4"]
    assert store.get("mine:q4") == model


def test_ids_with_colons_and_slashes_map_to_distinct_folders(store: ModelStore) -> None:
    folders = {store.folder_for(i) for i in ("a:b", "a", "hf:org/a:b", "hf:org/a-b:c")}
    assert len(folders) == 4
    assert all(f.parent == store.root for f in folders)


def test_import_is_idempotent_for_the_identical_file(store: ModelStore, tmp_path: Path) -> None:
    source = fake_gguf(tmp_path / "m.gguf")
    first = store.import_file(source, "m")
    again = store.import_file(source, "m")
    assert again == first
    linked = store.import_file(source, "m", link=True)
    assert linked == first


def test_import_of_another_file_under_a_taken_id_is_refused(
    store: ModelStore, tmp_path: Path
) -> None:
    store.import_file(fake_gguf(tmp_path / "a.gguf", b"one"), "m")
    with pytest.raises(InvalidRequest, match="already installed as 'm'"):
        store.import_file(fake_gguf(tmp_path / "b.gguf", b"two"), "m")
    assert store.get("m") is not None
    assert store.get("m").path.read_bytes() == b"GGUFone"  # type: ignore[union-attr]


def test_link_import_does_not_copy(store: ModelStore, tmp_path: Path) -> None:
    source = fake_gguf(tmp_path / "big.gguf")
    model = store.import_file(source, "big", link=True)
    assert model.manifest.linked
    assert os.path.samefile(model.path, source)
    store.remove("big")
    assert source.read_bytes() == b"GGUFweights"  # removing the model keeps the original


def test_symlink_fallback_when_hard_links_fail(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hard_links(*_args: object) -> None:
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    source = fake_gguf(tmp_path / "src.gguf")
    model = store.import_file(source, "src", link=True)
    assert model.path.is_symlink()
    store.remove("src")
    assert source.is_file()


def test_non_gguf_import_fails_and_leaves_nothing(store: ModelStore, tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("just text")
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        store.import_file(text, "notes")
    assert store.list() == []
    assert not store.root.exists() or tree(store.root) == {}


def test_failed_validation_leaves_nothing(store: ModelStore, tmp_path: Path) -> None:
    def reject(_path: Path) -> dict[str, object]:
        raise ModelLoadError("bad tensors")

    with pytest.raises(ModelLoadError, match="bad tensors"):
        store.import_file(fake_gguf(tmp_path / "x.gguf"), "x", inspect=reject)
    assert store.list() == []
    assert tree(store.root) == {}


def test_truncated_gguf_is_rejected_by_the_backend_and_leaves_nothing(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    broken = fake_gguf(tmp_path / "broken.gguf", b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="cannot read GGUF metadata"):
        backend.import_model(broken, "broken")
    assert backend.list_models() == []
    assert tree(backend.store.root) == {}


def test_missing_file(backend: LlamaCppBackend, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no such file"):
        backend.import_model(tmp_path / "absent.gguf", "absent")
    with pytest.raises(ModelLoadError, match="is a directory, not a GGUF model file"):
        backend.import_model(tmp_path, "a-directory")


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "/etc/evil",
        "a/../../evil",
        "evil\x00",
        "ev il",
        ".hidden",
        "x@ollama",
        "hf:org/repo:Q4",
        "..",
        "a:..",
        "models/evil",
    ],
)
def test_odd_import_names_are_refused_and_nothing_is_touched(
    backend: LlamaCppBackend, tmp_path: Path, name: str
) -> None:
    source = fake_gguf(tmp_path / "ok.gguf")
    before = tree(tmp_path)
    with pytest.raises(InvalidModelSpec):
        backend.import_model(source, name)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("model_id", ["../x", "a/b", "/abs", "x@llamacpp", ".tmp", "hf:a/b"])
def test_store_refuses_ids_that_are_not_store_ids(store: ModelStore, model_id: str) -> None:
    with pytest.raises(InvalidModelSpec):
        store.folder_for(model_id)
    with pytest.raises(InvalidModelSpec):
        store.remove(model_id)


def test_remove_never_follows_a_symlinked_folder(store: ModelStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    store.root.mkdir(parents=True)
    (store.root / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelNotFound):
        store.remove("evil")
    assert (outside / "keep.txt").read_text() == "precious"
    assert store.list() == []


def test_remove_by_spec_refuses_traversal(backend: LlamaCppBackend) -> None:
    for text in ("../evil", "/etc", "a/../b"):
        with pytest.raises(InvalidModelSpec):
            backend.remove(ModelSpec.parse(text))


def test_partial_and_broken_models_are_never_listed(store: ModelStore, tmp_path: Path) -> None:
    good = store.import_file(fake_gguf(tmp_path / "good.gguf"), "good")
    # A download in progress: a folder with a temporary file and no manifest.
    target = store.download_target("pulling:Q4_K_M", "file.gguf")
    target.with_name(target.name + ".partial").write_bytes(b"GGUF")
    # A manifest whose file is shorter than recorded (each file its own: one blob per content).
    short = store.import_file(fake_gguf(tmp_path / "short.gguf", b"short"), "short")
    short.path.write_bytes(b"GGUF")
    # A manifest that is not valid JSON, and one that lacks fields.
    bad = store.import_file(fake_gguf(tmp_path / "bad.gguf", b"bad"), "bad")
    (bad.folder / MANIFEST_NAME).write_text("{not json")
    half = store.import_file(fake_gguf(tmp_path / "half.gguf", b"half"), "half")
    (half.folder / MANIFEST_NAME).write_text(json.dumps({"id": "half", "source": "import"}))
    # A manifest copied into the wrong folder.
    moved = store.import_file(fake_gguf(tmp_path / "moved.gguf", b"moved"), "moved")
    data = json.loads((moved.folder / MANIFEST_NAME).read_text())
    (moved.folder / MANIFEST_NAME).write_text(json.dumps({**data, "id": "elsewhere"}))
    assert [m.id for m in store.list()] == [good.id]
    assert store.get("short") is None


def test_listing_sees_every_change_after_a_first_listing(store: ModelStore, tmp_path: Path) -> None:
    # The store keeps parsed manifests between listings: each change must still show.
    a = store.import_file(fake_gguf(tmp_path / "a.gguf", b"a"), "a")
    b = store.import_file(fake_gguf(tmp_path / "b.gguf", b"b"), "b")
    assert [m.id for m in store.list()] == ["a", "b"]
    manifest = a.folder / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    # Rewritten in place (the store itself always renames a new manifest in).
    manifest.write_text(json.dumps({**data, "quantization": "Q8_0"}))
    assert store.get("a") is not None and store.get("a").manifest.quantization == "Q8_0"
    # Replaced by a rename with a broken manifest, then the model file cut short.
    (a.folder / "new.json").write_text("{broken")
    os.replace(a.folder / "new.json", manifest)
    assert [m.id for m in store.list()] == ["b"]
    b.path.write_bytes(b"GGUF")
    assert store.list() == []
    # Gone, then imported again under the same id.
    shutil.rmtree(b.folder)
    assert store.list() == []
    again = store.import_file(fake_gguf(tmp_path / "b2.gguf", b"other weights"), "b")
    assert [(m.id, m.manifest.size) for m in store.list()] == [("b", again.manifest.size)]


def test_forget_then_commit_reinstalls(store: ModelStore, tmp_path: Path) -> None:
    model = store.import_file(fake_gguf(tmp_path / "m.gguf"), "m:Q4_K_M")
    store.forget("m:Q4_K_M")
    assert store.get("m:Q4_K_M") is None
    dest = store.download_target("m:Q4_K_M", "m.gguf")
    dest.write_bytes(b"GGUFweights")
    again = store.commit(model.manifest)
    assert again.id == "m:Q4_K_M"


@pytest.mark.parametrize(
    ("file_name", "model_id"),
    [
        ("Gemma-3-270M-Q4_K_M.gguf", "gemma-3-270m-q4_k_m"),
        ("my model (v2).GGUF", "my-model--v2"),
        ("weird..name.gguf", "weird.name"),
        ("tinyllama", "tinyllama"),
    ],
)
def test_ids_derived_from_file_names(file_name: str, model_id: str) -> None:
    assert id_from_file(Path("/somewhere") / file_name) == model_id


def test_ids_cannot_be_derived_from_symbols_only() -> None:
    with pytest.raises(InvalidModelSpec, match="pass a name"):
        id_from_file(Path("/x/___.gguf"))


def test_lookup_rules(backend: LlamaCppBackend, tmp_path: Path) -> None:
    store = backend.store
    installed = (
        "gemma3-270m:Q4_K_M",
        "gemma3-270m:Q8_0",
        "solo:v1",
        "two:a",
        "two:b",
        "exact",
        "exact:x",
        "hf:org/repo-GGUF:Q4_K_M",
    )
    for model_id in installed:
        store.import_file(fake_gguf(tmp_path / "f.gguf", model_id.encode()), model_id)

    def find(text: str) -> str:
        return backend._find(ModelSpec.parse(text)).id

    assert find("gemma3-270m") == "gemma3-270m:Q4_K_M"  # the catalog default of several
    assert find("gemma3-270m:q8_0") == "gemma3-270m:Q8_0"  # variants match case-insensitively
    assert find("gemma3-270m:Q8_0@llamacpp") == "gemma3-270m:Q8_0"
    assert find("solo") == "solo:v1"  # the single installed variant
    assert find("exact") == "exact"  # an exact id wins over variants
    assert find("hf:org/repo-GGUF") == "hf:org/repo-GGUF:Q4_K_M"
    assert find("hf.co/org/repo-GGUF:q4_k_m") == "hf:org/repo-GGUF:Q4_K_M"
    with pytest.raises(ModelNotFound, match="several variants of 'two'"):
        find("two")
    with pytest.raises(ModelNotFound, match="not installed"):
        find("gemma3-270m:Q2_K")
    assert backend.has_model(ModelSpec.parse("solo"))
    assert not backend.has_model(ModelSpec.parse("nothing"))
    rows = {m.id: m for m in backend.list_models()}
    assert set(rows) == set(installed)
    assert all(row.backend == "llamacpp" and row.size_bytes for row in rows.values())


def test_remove_deletes_the_folder(backend: LlamaCppBackend, tmp_path: Path) -> None:
    backend.store.import_file(fake_gguf(tmp_path / "r.gguf"), "r:1")
    folder = backend.store.folder_for("r:1")
    assert backend.remove(ModelSpec.parse("r")) == Removed("r:1")
    assert not folder.exists()
    with pytest.raises(ModelNotFound):
        backend.remove(ModelSpec.parse("r"))


def test_health_and_available_without_models(backend: LlamaCppBackend) -> None:
    health = backend.health()
    assert health.available
    assert health.version
    assert (health.models, health.loaded) == (0, 0)
    assert health.details["model_directory"] == str(backend.store.root)
    assert health.details["n_threads"] >= 1
    catalog = backend.available()
    assert any(m.name == "gemma3-270m" and "Q4_K_M" in m.variants for m in catalog)
    recommended = backend.available(recommended_only=True)
    assert recommended and all(m.recommended for m in recommended)
    assert len(recommended) <= len(catalog)


def test_concurrent_imports_of_one_file_give_one_model(store: ModelStore, tmp_path: Path) -> None:
    import threading

    source = fake_gguf(tmp_path / "same.gguf", b"x" * 1_000_000)
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(store.import_file(source, "same").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert results == ["same"] * 4
    assert [m.id for m in store.list()] == ["same"]
    assert tree(store.root / ".tmp") == {}


# Blobs: one file per content (issue 21, item 5) --------------------------------------------


def blobs(store: ModelStore) -> list[str]:
    folder = store.root / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_names_of_one_file_share_one_blob(store: ModelStore, tmp_path: Path) -> None:
    """Four names for the same file were four copies."""
    source = fake_gguf(tmp_path / "same.gguf", b"x" * 100_000)
    first = store.import_file(source, "a")
    store.import_file(source, "b")
    store.copy("a", "c")
    store.import_file(source, "d", link=True)
    assert [m.id for m in store.list()] == ["a", "b", "c", "d"]
    assert blobs(store) == [f"sha256-{first.manifest.sha256}"]
    assert {m.path for m in store.list()} == {first.path}
    assert store.copy("a", "c") == store.get("c")  # again: nothing to do
    with pytest.raises(InvalidRequest, match="different model is already installed as 'a'"):
        store.import_file(fake_gguf(tmp_path / "other.gguf", b"other"), "a")
    with pytest.raises(ModelNotFound):
        store.copy("nothing", "e")
    # remove deletes the blob only with its last name
    for name in ("a", "b", "c"):
        store.remove(name)
        assert blobs(store) == [f"sha256-{first.manifest.sha256}"]
        assert (
            store.get("d") is not None and store.get("d").path.read_bytes() == source.read_bytes()
        )  # type: ignore[union-attr]
    store.remove("d")
    assert blobs(store) == []
    assert source.is_file()


def _old_layout(root: Path, model_id: str, payload: bytes) -> Path:
    """A model as a store written before blobs holds it: the file in the model's folder."""
    import hashlib

    folder = root / model_id.replace(":", "@")
    folder.mkdir(parents=True)
    data = b"GGUF" + payload
    (folder / "model.gguf").write_bytes(data)
    manifest = {
        "id": model_id,
        "source": "import",
        "file": "model.gguf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_a_store_written_before_blobs_is_migrated_on_first_use(tmp_path: Path) -> None:
    root = tmp_path / "models"
    one = _old_layout(root, "one:Q4_K_M", b"same")
    two = _old_layout(root, "two", b"same")
    three = _old_layout(root, "three", b"other")
    store = ModelStore(root)
    assert [m.id for m in store.list()] == ["one:Q4_K_M", "three", "two"]
    assert len(blobs(store)) == 2  # one and two were two copies of one file
    for folder in (one, two, three):
        assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME]
        assert json.loads((folder / MANIFEST_NAME).read_text())["blob"].startswith("sha256-")
    assert store.get("two").path.read_bytes() == b"GGUFsame"  # type: ignore[union-attr]
    store.copy("three", "three-again")
    assert len(blobs(store)) == 2


def test_migration_resumes_after_a_crash_at_any_step(tmp_path: Path) -> None:
    root = tmp_path / "models"
    blob_placed = _old_layout(root, "blob-placed", b"a")  # crashed after the blob was placed
    manifest_written = _old_layout(root, "manifest-written", b"b")  # ...after the manifest
    store = ModelStore(root)
    sha_a = json.loads((blob_placed / MANIFEST_NAME).read_text())["sha256"]
    (root / "blobs").mkdir()
    shutil.copyfile(blob_placed / "model.gguf", root / "blobs" / f"sha256-{sha_a}")
    data = json.loads((manifest_written / MANIFEST_NAME).read_text())
    (root / "blobs" / f"sha256-{data['sha256']}").write_bytes(b"GGUFb")
    (manifest_written / MANIFEST_NAME).write_text(
        json.dumps({**data, "blob": f"sha256-{data['sha256']}"})
    )
    assert [m.id for m in store.list()] == ["blob-placed", "manifest-written"]
    assert len(blobs(store)) == 2
    for folder in (blob_placed, manifest_written):
        assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME]
    assert [m.path.read_bytes() for m in store.list()] == [b"GGUFa", b"GGUFb"]
