"""The model store: one folder per model id under the store root, holding the GGUF file and a
``manifest.json``.

Only a folder whose manifest is complete and whose file exists with the manifest's size is a
model: a download or import in progress (temporary files in the model's folder or in ``.tmp``)
is never listed. Ids are validated model specs (``name[:variant]`` or ``hf:ORG/REPO:QUANT``);
folder names are derived from them one-to-one and always checked to lie directly under the root,
so nothing outside the store is ever written or deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidModelSpec, InvalidRequest, ModelLoadError, ModelNotFound
from ..spec import ModelSpec

MANIFEST_NAME = "manifest.json"
TMP_DIR_NAME = ".tmp"
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
        return self.folder / self.manifest.file


class ModelStore:
    """The models under ``root``. Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        self._lock = threading.Lock()
        # Parsed manifests by folder, with the (inode, mtime, size) of the file they came from:
        # a manifest is only ever replaced by a rename, which changes the inode. Listing then
        # costs two stats a model instead of reading and parsing every manifest.
        self._manifests: dict[Path, tuple[tuple[int, int, int], Manifest | None]] = {}

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

    # Queries ------------------------------------------------------------------------------

    def list(self) -> list[StoredModel]:
        """Complete models, sorted by id."""
        if not self.root.is_dir():
            return []
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
        try:
            size = (folder / manifest.file).stat().st_size
        except OSError:
            return None
        return StoredModel(manifest, folder) if size == manifest.size else None

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
        existing = self.get(model_id)
        if existing is not None and existing.manifest.size == size:
            if sha256_of(source) == existing.manifest.sha256:
                return existing
        if existing is not None:
            raise InvalidRequest(
                f"a different model is already installed as {model_id!r}: remove it first, or"
                " import under another name",
                model=model_id,
            )

        tmp = self.tmp_dir() / f"{uuid.uuid4().hex}.partial"
        created = False
        try:
            linked = link and _link(source, tmp)
            digest = sha256_of(source) if linked else _copy_hashing(source, tmp)
            extra = inspect(tmp) if inspect is not None else {}
            manifest = Manifest(
                id=model_id,
                source="import",
                file=file_name_for(source.name),
                size=size,
                sha256=digest,
                imported_at=utc_now(),
                original_path=str(source.resolve()),
                linked=linked,
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
                os.replace(tmp, folder / manifest.file)
                self._write_manifest(folder, manifest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        model = self.get(model_id)
        assert model is not None
        return model

    def download_target(self, model_id: str, file_name: str) -> Path:
        """Where a download of ``model_id`` must end up (its folder is created)."""
        folder = self.folder_for(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / file_name_for(file_name)

    def commit(self, manifest: Manifest) -> StoredModel:
        """Record a downloaded file (already in place) as installed."""
        folder = self.folder_for(manifest.id)
        actual = (folder / manifest.file).stat().st_size
        if actual != manifest.size:
            raise ModelLoadError(
                f"{manifest.id}: file has {actual} bytes, expected {manifest.size}",
                model=manifest.id,
            )
        with self._lock:
            self._write_manifest(folder, manifest)
        model = self.get(manifest.id)
        assert model is not None
        return model

    def incoming_path(self, model_id: str, file_name: str) -> Path:
        """Where a pull of ``model_id`` downloads ``file_name`` before it is installed (its
        folder is created). Another pull of the same file resumes what is left there."""
        return incoming_path(self.download_target(model_id, file_name))

    def install_download(self, incoming: Path, manifest: Manifest) -> StoredModel:
        """Move the verified download ``incoming`` into place and record it.

        A model installed under the same id stays listed and usable until this moment; then
        its manifest is replaced atomically (its file too when it has the same name, else
        that file is deleted afterwards).
        """
        folder = self.folder_for(manifest.id)
        dest = folder / manifest.file
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
            os.replace(incoming, dest)
            self._write_manifest(folder, manifest)
            if previous is not None and previous.path != dest:
                previous.path.unlink(missing_ok=True)
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
        """Drop the manifest and model file of ``model_id`` (before a forced re-download)."""
        model = self.get(model_id)
        if model is None:
            return
        with self._lock:
            (model.folder / MANIFEST_NAME).unlink(missing_ok=True)
            model.path.unlink(missing_ok=True)

    def remove(self, model_id: str) -> None:
        """Delete the folder of ``model_id``; links inside it are removed, never followed."""
        folder = self.folder_for(model_id)
        if folder.is_symlink() or not folder.is_dir():
            raise ModelNotFound(f"model {model_id!r} is not installed", model=model_id)
        with self._lock:
            shutil.rmtree(folder)

    def _write_manifest(self, folder: Path, manifest: Manifest) -> None:
        tmp = folder / f".{MANIFEST_NAME}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / MANIFEST_NAME)


def incoming_path(dest: Path) -> Path:
    """Where the download of the model file ``dest`` waits until it is verified."""
    return dest.with_name(dest.name + INCOMING_SUFFIX)


def _link(source: Path, dest: Path) -> bool:
    """Hard-link ``source`` to ``dest``, else symlink it; False when neither is possible."""
    try:
        os.link(source, dest)
        return True
    except OSError:
        pass
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
