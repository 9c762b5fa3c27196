"""The model store: one folder per model id under the store root, holding its
``manifest.json``, and the GGUF files stored once each by their sha256 in ``blobs/``
(``blobs/sha256-<hex>``, as Ollama stores them).

Several ids may name one blob (a second import of a file, ``model cp``, a pull of a file that
is already here): none of them costs a copy, and removing an id deletes its blob only when no
other id uses it. A store written before blobs (the file inside the model's folder) is moved to
blobs on first use, one model at a time and crash-safe: the blob is hard-linked (else copied)
into place before the manifest names it, and the folder's file is deleted only after; every
step can be repeated after a crash.

Only a folder whose manifest is complete and whose file exists with the manifest's size is a
model: a download or import in progress (temporary files in the model's folder or in ``.tmp``)
is never listed. Ids are validated model specs (``name[:variant]`` or ``hf:ORG/REPO:QUANT``);
folder names are derived from them one-to-one and always checked to lie directly under the root,
so nothing outside the store is ever written or deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidModelSpec, InvalidRequest, ModelLoadError, ModelNotFound
from ..leftovers import owned_name, remove_orphans, size_of
from ..spec import ModelSpec

MANIFEST_NAME = "manifest.json"
TMP_DIR_NAME = ".tmp"
PARTIAL_SUFFIX = ".partial"
BLOBS_DIR_NAME = "blobs"
INCOMING_SUFFIX = ".incoming"
"""A pull downloads to ``<file>.incoming`` (its bytes in progress beside it, in
``<file>.incoming.partial``) and moves it into place only once it is verified."""
GGUF_MAGIC = b"GGUF"
DEFAULT_FILE_NAME = "model.gguf"
_CHUNK = 1 << 20
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.gguf", re.IGNORECASE)
# ':' and '/' cannot be in folder names everywhere; '@' and '~' cannot be in ids, so the
# mapping is one-to-one.
_FOLDER_CHARS = str.maketrans({":": "@", "/": "~"})

Source = Literal["import", "catalog", "hf"]

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def validate_id(model_id: str) -> ModelSpec:
    """The parsed form of a store id; :class:`InvalidModelSpec` for anything else."""
    spec = ModelSpec.parse(model_id)
    incomplete_hf = spec.is_hf and spec.variant is None
    if spec.backend or spec.provider or incomplete_hf or str(spec) != model_id:
        raise InvalidModelSpec(
            f"invalid model id {model_id!r}: expected name[:variant] or hf:ORG/REPO:QUANT",
            model=model_id,
        )
    return spec


def file_name_for(source_name: str) -> str:
    """A safe file name for a model file called ``source_name`` upstream or on disk."""
    base = source_name.replace("\\", "/").rsplit("/", 1)[-1]
    return base if _SAFE_FILE.fullmatch(base) and ".." not in base else DEFAULT_FILE_NAME


def is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def blob_name(sha256: str) -> str:
    """The file name of the blob whose content has this sha256."""
    return f"sha256-{sha256.lower()}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records about one installed model."""

    id: str
    source: Source
    file: str
    size: int
    sha256: str
    quantization: str | None = None
    architecture: str | None = None
    parameter_size: str | None = None
    context_length: int | None = None
    repo: str | None = None
    revision: str | None = None
    pulled_at: str | None = None
    imported_at: str | None = None
    original_path: str | None = None
    linked: bool = False
    blob: str | None = None
    """``sha256-<hex>``: the file is ``blobs/<blob>``; None in a store written before blobs
    (the file is ``file`` in the model's folder until it is migrated)."""

    @property
    def installed_at(self) -> str | None:
        return self.pulled_at or self.imported_at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest | None:
        """The manifest in ``data``, or None when it is incomplete or malformed."""
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None
        valid = (
            isinstance(manifest.id, str)
            and manifest.source in ("import", "catalog", "hf")
            and isinstance(manifest.file, str)
            and file_name_for(manifest.file) == manifest.file
            and isinstance(manifest.size, int)
            and manifest.size > 0
            and isinstance(manifest.sha256, str)
            and len(manifest.sha256) == 64
            and (manifest.blob is None or manifest.blob == blob_name(manifest.sha256))
        )
        return manifest if valid else None


@dataclass(frozen=True)
class StoredModel:
    """An installed model: its manifest and where it lives."""

    manifest: Manifest
    folder: Path

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def path(self) -> Path:
        """The GGUF file: its blob (``file`` in the folder for a model not yet migrated)."""
        if self.manifest.blob is not None:
            return self.folder.parent / BLOBS_DIR_NAME / self.manifest.blob
        return self.folder / self.manifest.file


class ModelStore:
    """The models under ``root``. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        # Re-entrant: a lookup under the lock may migrate the store, which takes it too.
        self._lock = threading.RLock()
        # Parsed manifests by folder, with the (inode, mtime, size) of the file they came from:
        # a manifest is only ever replaced by a rename, which changes the inode. Listing then
        # costs two stats a model instead of reading and parsing every manifest.
        self._manifests: dict[Path, tuple[tuple[int, int, int], Manifest | None]] = {}
        self._migrated = False

    # Paths --------------------------------------------------------------------------------

    def folder_for(self, model_id: str) -> Path:
        """The folder of ``model_id``; refuses ids that are not store ids or escape the root."""
        validate_id(model_id)
        name = model_id.translate(_FOLDER_CHARS)
        folder = self.root / name
        # The folder itself is not resolved: a symlink planted in the store is refused where
        # it is used (listing, removal), never followed.
        unsafe = name.startswith(".") or os.sep in name or "/" in name
        if unsafe or folder.parent.resolve() != self.root.resolve():
            raise InvalidModelSpec(f"model id {model_id!r} does not name a folder in the store")
        return folder

    def tmp_dir(self) -> Path:
        path = self.root / TMP_DIR_NAME
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_leftovers(self) -> int:
        """Delete the unfinished imports of processes that were killed (``.tmp/*.partial``
        whose owner is gone); returns the bytes freed. Those of live processes stay."""
        return remove_orphans(self.root / TMP_DIR_NAME, f"*{PARTIAL_SUFFIX}")

    def unfinished_import_bytes(self) -> int:
        """Bytes of imports in progress (or left by a killed process) in ``.tmp``."""
        return sum(size_of(p) for p in (self.root / TMP_DIR_NAME).glob(f"*{PARTIAL_SUFFIX}"))

    def blob_path(self, sha256: str) -> Path:
        return self.root / BLOBS_DIR_NAME / blob_name(sha256)

    def has_blob(self, sha256: str, size: int) -> bool:
        """Whether the file with this sha256 (and size) is stored already."""
        try:
            return self.blob_path(sha256).stat().st_size == size
        except OSError:
            return False

    # Queries ------------------------------------------------------------------------------

    def list(self) -> list[StoredModel]:
        """Complete models, sorted by id."""
        if not self.root.is_dir():
            return []
        self._migrate_once()
        models = []
        folders = set()
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue  # a symlink planted in the store is never followed
                folder = self.root / entry.name
                folders.add(folder)
                model = self._read(folder)
                if model is not None:
                    models.append(model)
        for gone in self._manifests.keys() - folders:
            self._manifests.pop(gone, None)
        return sorted(models, key=lambda m: m.id)

    def get(self, model_id: str) -> StoredModel | None:
        folder = self.folder_for(model_id)
        if folder.is_symlink() or not folder.is_dir():
            return None
        self._migrate_once()
        model = self._read(folder)
        return model if model is not None and model.id == model_id else None

    def _read(self, folder: Path) -> StoredModel | None:
        try:
            stat = os.stat(folder / MANIFEST_NAME)
        except OSError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._manifests.get(folder)
        if cached is not None and cached[0] == key:
            manifest = cached[1]
        else:
            manifest = self._parse_manifest(folder)
            self._manifests[folder] = (key, manifest)
        if manifest is None:
            return None
        model = StoredModel(manifest, folder)
        try:
            size = model.path.stat().st_size
        except OSError:
            return None
        return model if size == manifest.size else None

    @staticmethod
    def _parse_manifest(folder: Path) -> Manifest | None:
        """The manifest in ``folder``, if it is valid and names this folder's model."""
        try:
            data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        manifest = Manifest.from_dict(data)
        if manifest is None:
            return None
        try:
            # ``folder`` is in the store (listed or checked by folder_for): its name decides.
            validate_id(manifest.id)
        except InvalidModelSpec:
            return None
        return manifest if manifest.id.translate(_FOLDER_CHARS) == folder.name else None

    # Changes ------------------------------------------------------------------------------

    def import_file(
        self,
        source: Path,
        model_id: str,
        *,
        link: bool = False,
        inspect: Callable[[Path], dict[str, Any]] | None = None,
    ) -> StoredModel:
        """Register the GGUF at ``source`` as ``model_id`` (copied, or linked when ``link``).

        ``inspect(path)`` is called on the new file before it is committed, to validate it and
        return extra manifest fields (quantization, architecture...); if it raises, nothing is
        left in the store. Importing the identical file under the same id returns the model
        already there.
        """
        folder = self.folder_for(model_id)
        source = source.expanduser()
        try:
            if source.is_dir():
                raise ModelLoadError(
                    f"{source} is a directory, not a GGUF model file (name the .gguf file in it)",
                    model=model_id,
                )
            if not source.is_file():
                raise ModelNotFound(f"no such file: {source}", model=model_id)
            if not is_gguf(source):
                raise ModelLoadError(
                    f"{source} is not a GGUF model file (it does not start with the GGUF magic"
                    " bytes)",
                    model=model_id,
                )
            size = source.stat().st_size
        except OSError as exc:  # a name too long, a file that cannot be read (/proc/self/mem)
            raise ModelLoadError(
                f"cannot read {source}: {exc.strerror or exc}", model=model_id
            ) from exc
        digest = sha256_of(source)
        existing = self.get(model_id)
        if existing is not None:
            if existing.manifest.sha256 == digest:
                return existing
            raise InvalidRequest(
                f"a different model is already installed as {model_id!r}: remove it first, or"
                " import under another name",
                model=model_id,
            )

        tmp = self.tmp_dir() / owned_name(suffix=PARTIAL_SUFFIX)
        created = False
        try:
            # A file the store has already costs no copy: this id names the same blob.
            stored = self.has_blob(digest, size)
            linked = False
            if not stored:
                linked = link and _link(source, tmp)
                if not linked and _copy_hashing(source, tmp) != digest:
                    raise ModelLoadError(f"{source} changed while it was imported", model=model_id)
            extra = inspect(self.blob_path(digest) if stored else tmp) if inspect else {}
            manifest = Manifest(
                id=model_id,
                source="import",
                file=file_name_for(source.name),
                size=size,
                sha256=digest,
                imported_at=utc_now(),
                original_path=str(source.resolve()),
                linked=linked,
                blob=blob_name(digest),
                **extra,
            )
            with self._lock:
                raced = self.get(model_id)  # another import of this id finished meanwhile
                if raced is not None:
                    if raced.manifest.sha256 == digest:
                        tmp.unlink(missing_ok=True)
                        return raced
                    raise InvalidRequest(
                        f"a different model was installed as {model_id!r} meanwhile",
                        model=model_id,
                    )
                created = not folder.exists()
                folder.mkdir(parents=True, exist_ok=True)
                if not stored:
                    self._store_blob(tmp, digest, size)
                self._write_manifest(folder, manifest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        model = self.get(model_id)
        assert model is not None
        return model

    def copy(self, source_id: str, new_id: str) -> StoredModel:
        """``new_id`` for the model ``source_id``: a second manifest naming the same blob (no
        bytes are copied). Copying onto an id that already names the same file is a no-op."""
        source = self.get(source_id)
        if source is None:
            raise ModelNotFound(f"model {source_id!r} is not installed", model=source_id)
        folder = self.folder_for(new_id)
        with self._lock:
            existing = self.get(new_id)
            if existing is not None:
                if existing.manifest.sha256 == source.manifest.sha256:
                    return existing
                raise InvalidRequest(
                    f"a different model is already installed as {new_id!r}: remove it first,"
                    " or copy to another name",
                    model=new_id,
                )
            if source.manifest.blob is None:  # not migrated yet (migration failed for it)
                raise InvalidRequest(
                    f"{source_id} is stored in its folder, not as a blob: it cannot be copied"
                    " without copying its bytes",
                    model=source_id,
                )
            manifest = dataclasses.replace(source.manifest, id=new_id)
            created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            try:
                self._write_manifest(folder, manifest)
            except BaseException:
                if created:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
        model = self.get(new_id)
        assert model is not None
        return model

    def download_target(self, model_id: str, file_name: str) -> Path:
        """Where a download of ``model_id`` must end up (its folder is created)."""
        folder = self.folder_for(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / file_name_for(file_name)

    def commit(self, manifest: Manifest) -> StoredModel:
        """Record a downloaded file (already in place, in the model's folder) as installed:
        it becomes the blob ``manifest`` names."""
        folder = self.folder_for(manifest.id)
        placed = folder / manifest.file
        actual = placed.stat().st_size
        if actual != manifest.size:
            raise ModelLoadError(
                f"{manifest.id}: file has {actual} bytes, expected {manifest.size}",
                model=manifest.id,
            )
        manifest = dataclasses.replace(manifest, blob=blob_name(manifest.sha256))
        with self._lock:
            self._store_blob(placed, manifest.sha256, manifest.size)
            self._write_manifest(folder, manifest)
        model = self.get(manifest.id)
        assert model is not None
        return model

    def incoming_path(self, model_id: str, file_name: str) -> Path:
        """Where a pull of ``model_id`` downloads ``file_name`` before it is installed (its
        folder is created). Another pull of the same file resumes what is left there."""
        return incoming_path(self.download_target(model_id, file_name))

    def install_download(self, incoming: Path | None, manifest: Manifest) -> StoredModel:
        """Move the verified download ``incoming`` into the blobs and record it (``None``: the
        blob ``manifest`` names is stored already, nothing was downloaded).

        A model installed under the same id stays listed and usable until this moment; then
        its manifest is replaced atomically, and its previous blob is deleted if no id uses it
        any more.
        """
        folder = self.folder_for(manifest.id)
        manifest = dataclasses.replace(manifest, blob=blob_name(manifest.sha256))
        if incoming is None:
            if not self.has_blob(manifest.sha256, manifest.size):
                raise ModelNotFound(f"{manifest.id}: its blob is not stored", model=manifest.id)
            with self._lock:
                previous = self.get(manifest.id)
                folder.mkdir(parents=True, exist_ok=True)
                self._write_manifest(folder, manifest)
                if previous is not None:
                    self._drop_blob_if_unused(previous.manifest)
            model = self.get(manifest.id)
            assert model is not None
            return model
        if incoming.parent != folder:
            raise InvalidRequest(f"{incoming} is not a download into {folder}", model=manifest.id)
        actual = incoming.stat().st_size
        if actual != manifest.size:
            raise ModelLoadError(
                f"{manifest.id}: the download has {actual} bytes, expected {manifest.size}",
                model=manifest.id,
            )
        with self._lock:
            previous = self.get(manifest.id)
            self._store_blob(incoming, manifest.sha256, manifest.size)
            self._write_manifest(folder, manifest)
            if previous is not None:
                self._drop_blob_if_unused(previous.manifest)
        model = self.get(manifest.id)
        assert model is not None
        return model

    def unfinished(self, model_id: str) -> tuple[Path, ...]:
        """What unfinished pulls of ``model_id`` left in its folder (nothing when the model is
        installed: then the folder is the model's)."""
        folder = self.folder_for(model_id)
        if folder.is_symlink() or not folder.is_dir() or self.get(model_id) is not None:
            return ()
        return tuple(sorted(p for p in folder.iterdir() if p.name != MANIFEST_NAME))

    def discard_unfinished(self, model_id: str) -> int | None:
        """Delete what unfinished pulls of ``model_id`` left (its folder, when no model is
        installed there); returns the bytes freed, or None when there was nothing.

        :class:`InvalidRequest` when a pull of it is downloading right now.
        """
        from filelock import FileLock, Timeout

        leftovers = self.unfinished(model_id)
        folder = self.folder_for(model_id)
        if not folder.is_dir() or folder.is_symlink() or self.get(model_id) is not None:
            return None
        for lock_path in (p for p in leftovers if p.name.endswith(".lock")):
            lock = FileLock(str(lock_path), timeout=0)
            try:
                lock.acquire()
            except Timeout as exc:
                raise InvalidRequest(
                    f"{model_id} is being downloaded right now: interrupt that pull first",
                    model=model_id,
                ) from exc
            lock.release()
        freed = 0
        for path in leftovers:
            if path.is_file() and not path.is_symlink():
                freed += path.stat().st_size
        with self._lock:
            shutil.rmtree(folder)
        return freed

    def tidy(self, model_id: str) -> None:
        """Remove the folder of ``model_id`` if a failed pull left it empty."""
        try:
            self.folder_for(model_id).rmdir()
        except OSError:
            pass  # not empty (a model, or a partial kept for resume) or already gone

    def forget(self, model_id: str) -> None:
        """Drop the manifest of ``model_id``, and its file unless another id uses it."""
        model = self.get(model_id)
        if model is None:
            return
        with self._lock:
            (model.folder / MANIFEST_NAME).unlink(missing_ok=True)
            self._drop_blob_if_unused(model.manifest)

    def remove(self, model_id: str) -> None:
        """Delete the folder of ``model_id`` (links inside it are removed, never followed), then
        its blob if no other id uses it."""
        folder = self.folder_for(model_id)
        if folder.is_symlink() or not folder.is_dir():
            raise ModelNotFound(f"model {model_id!r} is not installed", model=model_id)
        model = self.get(model_id)
        with self._lock:
            shutil.rmtree(folder)
            self._manifests.pop(folder, None)
            if model is not None:
                self._drop_blob_if_unused(model.manifest)

    # Blobs ----------------------------------------------------------------------------------

    def _store_blob(self, path: Path, sha256: str, size: int) -> None:
        """Move the verified file ``path`` to its blob (dropped when the blob is there)."""
        blob = self.blob_path(sha256)
        if self.has_blob(sha256, size):
            path.unlink(missing_ok=True)
            return
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, blob)

    def _drop_blob_if_unused(self, manifest: Manifest) -> None:
        """Delete the blob of ``manifest`` unless a listed model still uses it."""
        if manifest.blob is None:
            return
        if any(m.manifest.blob == manifest.blob for m in self._complete()):
            return
        (self.root / BLOBS_DIR_NAME / manifest.blob).unlink(missing_ok=True)

    def _complete(self) -> Sequence[StoredModel]:
        """The models as :meth:`list` sees them, without migrating (callers hold the lock)."""
        models = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                model = self._read(self.root / entry.name)
                if model is not None:
                    models.append(model)
        return models

    def _migrate_once(self) -> None:
        """Move the files of a store written before blobs into ``blobs/`` (once per store
        object; a model that cannot be moved stays usable where it is)."""
        if self._migrated:
            return
        with self._lock:
            if self._migrated:
                return
            self._migrated = True
            for model in self._complete():
                try:
                    self._migrate(model)
                except OSError as exc:
                    log.warning("could not move %s into the store's blobs: %s", model.id, exc)

    def _migrate(self, model: StoredModel) -> None:
        manifest = model.manifest
        in_folder = model.folder / manifest.file
        if manifest.blob is not None:
            # A crash after the manifest was written, before the folder's file was deleted.
            if in_folder.exists() or in_folder.is_symlink():
                in_folder.unlink()
            return
        if not self.has_blob(manifest.sha256, manifest.size):
            tmp = self.tmp_dir() / owned_name(suffix=PARTIAL_SUFFIX)
            try:
                if in_folder.is_symlink():  # a linked import: the blob links the original
                    tmp.symlink_to(os.readlink(in_folder))
                elif not _link(in_folder, tmp, symlink=False):
                    shutil.copyfile(in_folder, tmp)
                self._store_blob(tmp, manifest.sha256, manifest.size)
            finally:
                tmp.unlink(missing_ok=True)
        self._write_manifest(
            model.folder, dataclasses.replace(manifest, blob=blob_name(manifest.sha256))
        )
        in_folder.unlink()

    def _write_manifest(self, folder: Path, manifest: Manifest) -> None:
        tmp = folder / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / MANIFEST_NAME)


def incoming_path(dest: Path) -> Path:
    """Where the download of the model file ``dest`` waits until it is verified."""
    return dest.with_name(dest.name + INCOMING_SUFFIX)


def _link(source: Path, dest: Path, *, symlink: bool = True) -> bool:
    """Hard-link ``source`` to ``dest``, else (with ``symlink``) symlink it; False when that is
    not possible."""
    try:
        os.link(source, dest)
        return True
    except OSError:
        pass
    if not symlink:
        return False
    try:
        dest.symlink_to(source.resolve())
        return True
    except OSError:
        return False


def _copy_hashing(source: Path, dest: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as reader, dest.open("wb") as writer:
        while block := reader.read(_CHUNK):
            digest.update(block)
            writer.write(block)
    return digest.hexdigest()
