"""Pulling a model into the store: which file a spec names, and downloading, verifying and
installing it.

The file is downloaded beside its final place (``<file>.incoming``, bytes in progress in
``<file>.incoming.partial``, kept when the pull is interrupted so the next one resumes) and
installed only once its size, sha256 and GGUF header check out; a model installed under the
same id stays listed and usable until then.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import Cancelled, ModelLoadError, ModelNotFound
from ..spec import ModelSpec
from ..types import Progress, ProgressCallback
from .cancel import check_cancel
from .ids import BACKEND, HF_DEFAULT_QUANT
from .metadata import read_metadata
from .store import Manifest, ModelStore, StoredModel, file_name_for, utc_now, validate_id

if TYPE_CHECKING:
    from .hub import HubFile


@dataclass(frozen=True)
class PullTarget:
    """What pulling a spec downloads, and the store id it is installed as."""

    model_id: str
    repo: str
    source: Literal["hf", "catalog"]
    quant: str


def pull_target(spec: ModelSpec, quantization: str | None) -> PullTarget:
    """The target of pulling ``spec`` (a catalog name or an ``hf:`` repo)."""
    from . import catalog

    quant = quantization or spec.variant
    if spec.is_hf:
        assert spec.hf_repo is not None
        quant = (quant or HF_DEFAULT_QUANT).upper()
        target = PullTarget(f"hf:{spec.hf_repo}:{quant}", spec.hf_repo, "hf", quant)
    else:
        entry = catalog.lookup(spec.model)
        if entry is None:
            raise ModelNotFound(
                f"{spec.model!r} is not in the llamacpp catalog: see `llmspell model"
                " available --backend llamacpp`, or pull any GGUF repo as hf:ORG/REPO[:QUANT]",
                model=spec.name,
                backend=BACKEND,
            )
        quant = quant or entry.default_quant
        quant = next((q for q in entry.quants if q.lower() == quant.lower()), quant.upper())
        target = PullTarget(f"{entry.name}:{quant}", entry.repo, "catalog", quant)
    validate_id(target.model_id)
    return target


class PullProgress:
    """A pull's reports to the caller's progress callback (which may raise :class:`Cancelled`
    to interrupt the pull)."""

    def __init__(self, model_id: str, callback: ProgressCallback | None) -> None:
        self.model_id = model_id
        self._callback = callback

    def __call__(self, phase: str, completed: int | None = None, total: int | None = None) -> None:
        if self._callback is not None:
            self._callback(Progress(self.model_id, phase, completed, total))

    def past_return(self, phase: str, completed: int | None, total: int | None) -> None:
        """Report a phase once every byte is here and verified: an interrupt has nothing left
        to save then, so a :class:`Cancelled` from the callback only silences it and the pull
        finishes (a matter of milliseconds)."""
        try:
            self(phase, completed, total)
        except Cancelled:
            self._callback = None


def download_and_install(
    store: ModelStore,
    target: PullTarget,
    report: PullProgress,
    cancel: threading.Event | None,
    *,
    reuse: bool = True,
) -> tuple[StoredModel, int, int]:
    """Resolve ``target`` on the Hub, download and verify its file, and install it; returns
    the model, how many bytes were downloaded, and how many an interrupted earlier pull had
    left and were kept. With ``reuse``, a file the store holds already (the Hub's sha256
    names a blob) is not downloaded at all."""
    from . import hub

    model_id = target.model_id
    check_cancel("pull of", model_id, cancel)
    report("resolving")
    file = hub.resolve(target.repo, target.quant)
    check_cancel("pull of", model_id, cancel)
    if reuse and file.sha256 is not None and store.has_blob(file.sha256, file.size):
        # The file is here already (another id, an import, an earlier pull): no download.
        report.past_return("verifying", file.size, file.size)
        blob = store.blob_path(file.sha256)
        return store.install_download(None, _manifest(target, file, blob, file.sha256)), 0, 0
    incoming = store.incoming_path(model_id, file.filename)
    kept = 0

    def resumed(size: int) -> None:
        nonlocal kept
        kept = size

    try:
        report("downloading", 0, file.size)
        digest = hub.download(
            file,
            incoming,
            lambda done, total: report("downloading", done, total),
            cancel,
            on_resumed=resumed,
        )
        report.past_return("verifying", file.size, file.size)
        try:
            manifest = _manifest(target, file, incoming, digest)
        except ModelLoadError:
            incoming.unlink(missing_ok=True)  # intact bytes, but not a model llama.cpp reads
            raise
        return store.install_download(incoming, manifest), manifest.size - kept, kept
    finally:
        store.tidy(model_id)


def _manifest(target: PullTarget, file: HubFile, path: Path, digest: str) -> Manifest:
    """The manifest of ``target`` installed from the verified ``path`` (sha256 ``digest``)."""
    metadata = read_metadata(path)
    metadata.check_loadable(f"{file.repo}/{file.filename}")
    return Manifest(
        id=target.model_id,
        source=target.source,
        file=file_name_for(file.filename),
        size=path.stat().st_size,
        sha256=digest,
        repo=file.repo,
        revision=file.revision,
        pulled_at=utc_now(),
        **metadata.manifest_fields(file.quant.upper() or target.quant),
    )
