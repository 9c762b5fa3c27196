"""GGUF files from the Hugging Face Hub: find the file for a quantization, download it.

All huggingface_hub (and its HTTP client's) use lives in this module, and every foreign error
is translated here, at this one boundary, into the llmspell error tree:

- repository or revision unknown → :class:`ModelNotFound`;
- unknown quantization, split GGUF, hub unreachable or offline, HTTP errors →
  :class:`DownloadError`;
- bytes that do not match the announced size or sha256 → :class:`ChecksumMismatch`;
- the caller's cancel event → :class:`Cancelled`.

The endpoint (``HF_ENDPOINT``) and offline mode (``HF_HUB_OFFLINE``) are read from the
environment at each call, because huggingface_hub reads them only once, at import.

Downloads are ours rather than ``hf_hub_download``'s: huggingface_hub deletes its partial
files when a transfer fails, so resuming across calls (and processes) needs a partial file
that outlives the call. :func:`download` streams the resolve URL into ``<dest>.partial``
beside the destination, resumes it with a Range request next time, and renames it into place
only after its size and sha256 check out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from ..errors import Cancelled, ChecksumMismatch, DownloadError, LLMSpellError, ModelNotFound
from ..hangup import HangUp

DEFAULT_ENDPOINT = "https://huggingface.co"
ENDPOINT_ENV = "HF_ENDPOINT"
OFFLINE_ENV = "HF_HUB_OFFLINE"
API_TIMEOUT = 30.0
"""Seconds for metadata requests and for each read of a download (a stalled transfer)."""
PARTIAL_SUFFIX = ".partial"
MAX_PROGRESS_EVENTS = 200
"""Progress is reported at most about this many times per file (plus the first and last)."""

# Pauses before retrying a transfer that broke without delivering new bytes; a transfer that
# made progress before breaking is retried at once. Tests set this to zeros.
_RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0)

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_LABEL = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q\d(?:_[A-Za-z0-9]+)*|B?F16|FP16|F32|FP32))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# Files in GGUF repositories that are not language models (vision projectors, imatrix data).
_AUXILIARY = re.compile(r"(mmproj|imatrix)[^/]*$", re.IGNORECASE)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class HubFile:
    """One GGUF file in a Hub repository, pinned to a commit."""

    repo: str
    filename: str
    revision: str
    """The commit the file was resolved at (or the revision asked for, if the Hub gave none)."""
    size: int
    sha256: str | None
    quant: str


def endpoint() -> str:
    """The Hub endpoint in effect: ``$HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    value = os.environ.get(OFFLINE_ENV) or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def partial_path(dest: Path) -> Path:
    """Where :func:`download` keeps the bytes of an unfinished download of ``dest``."""
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def quant_label(filename: str) -> str | None:
    """The quantization named in a GGUF file name (``…-Q4_K_M.gguf`` → ``Q4_K_M``), if any."""
    stem = _SPLIT.sub("", filename.rsplit("/", 1)[-1])
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    found = _QUANT_LABEL.findall(stem)
    return found[-1].upper() if found else None


# Resolving ------------------------------------------------------------------------------------


def _import_hub() -> None:
    """Import huggingface_hub without tqdm's notebook warning.

    huggingface_hub imports ``tqdm.auto``, which inside a Jupyter kernel picks the notebook
    widget and warns on the terminal that ipywidgets is missing. Our progress never uses tqdm.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        # huggingface_hub loads its submodules lazily: name what we use to import it now
        from huggingface_hub import HfApi, hf_hub_url  # noqa: F401


def resolve(repo: str, quant: str, *, revision: str | None = None) -> HubFile:
    """The GGUF file of ``repo`` whose name holds ``quant`` (case-insensitive)."""
    url = endpoint()
    _check_online(repo, url)
    quant = quant.strip()
    if not quant:
        raise DownloadError(f"{repo}: empty quantization", model=repo)

    _import_hub()
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=url).model_info(
            repo, revision=revision, files_metadata=True, timeout=API_TIMEOUT
        )
    except Exception as exc:
        raise _translate(exc, repo=repo, url=url, revision=revision) from exc

    commit = info.sha or revision or "main"
    ggufs = [
        sibling
        for sibling in info.siblings or []
        if sibling.rfilename.lower().endswith(".gguf") and not _AUXILIARY.search(sibling.rfilename)
    ]
    if not ggufs:
        raise DownloadError(
            f"{repo} has no GGUF model files on the Hugging Face Hub (at {url})", model=repo
        )
    names = [sibling.rfilename for sibling in ggufs]
    filename = _pick(repo, quant, names)
    sibling = ggufs[names.index(filename)]
    lfs = sibling.lfs
    size = lfs.size if lfs is not None else sibling.size
    if size is None:
        raise DownloadError(f"{repo}: the Hub did not report the size of {filename}", model=repo)
    return HubFile(
        repo=repo,
        filename=filename,
        revision=commit,
        size=int(size),
        sha256=lfs.sha256.lower() if lfs is not None else None,
        quant=quant_label(filename) or quant.upper(),
    )


def _pick(repo: str, quant: str, names: Sequence[str]) -> str:
    key = quant.lower()
    bounded = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matches = [n for n in names if bounded.search(_basename_stem(n))]
    if not matches:
        matches = [n for n in names if key in _basename_stem(n).lower()]
    singles = [n for n in matches if not _SPLIT.search(n)]
    if len(singles) == 1:
        return singles[0]
    if len(singles) > 1:
        raise DownloadError(
            f"{repo}: quantization {quant!r} matches several files "
            f"({', '.join(sorted(singles))}); name one of: {', '.join(_quants(singles))}",
            model=repo,
        )
    if matches:
        first = sorted(matches)[0]
        parts = _SPLIT.search(first)
        count = int(parts.group(2)) if parts else len(matches)
        raise DownloadError(
            f"{repo}: quantization {quant!r} is split into {count} files ({first}, ...); "
            "split GGUF files are not supported, choose another quantization "
            f"(single-file ones: {', '.join(_quants(n for n in names if not _SPLIT.search(n)))})",
            model=repo,
        )
    raise DownloadError(
        f"{repo} has no GGUF file for quantization {quant!r}; "
        f"available: {', '.join(_quants(names, mark_split=True))}",
        model=repo,
    )


def _quants(names: Iterable[str], *, mark_split: bool = False) -> list[str]:
    labels: set[str] = set()
    for name in names:
        label = quant_label(name) or _basename_stem(name)
        labels.add(f"{label} (split)" if mark_split and _SPLIT.search(name) else label)
    return sorted(labels) or ["none"]


def _basename_stem(name: str) -> str:
    return re.sub(r"\.gguf$", "", name.rsplit("/", 1)[-1], flags=re.IGNORECASE)


# Downloading ----------------------------------------------------------------------------------


class _Transient(Exception):
    """A transfer broke in a way worth retrying (connection lost, 5xx, timeout)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class _PartialMeta:
    """What the partial file is a part of, so a partial of another file version is not resumed."""

    repo: str
    filename: str
    size: int
    sha256: str | None


def download(
    file: HubFile,
    dest: Path,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    on_resumed: Callable[[int], None] | None = None,
) -> str:
    """Download ``file`` to ``dest``, verified; returns its sha256 (hex).

    Bytes go to ``<dest>.partial`` (kept when the transfer is interrupted or cancelled, and
    resumed by the next call); ``dest`` appears, atomically, only once size and sha256 match.
    ``on_resumed(n)`` is told, once the file is verified, how many of its bytes an earlier call
    had left in the partial file and were kept (0 when the transfer started from scratch).
    ``transport`` replaces httpx's own for the transfer (a mock, in tests); with one that has
    no sockets a cancel is noticed between chunks only, not while a read waits (see
    :mod:`providers.hangup`).
    """
    dest = Path(dest)
    url = endpoint()
    _check_online(file.repo, url)
    _check_cancel(file, cancel)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest.parent}: {exc}", model=file.repo) from exc
    partial = partial_path(dest)
    try:
        with _exclusive(file, partial):
            digest, resumed = _download_locked(
                file, dest, partial, url, progress, cancel, transport
            )
    except LLMSpellError:
        raise
    except Exception as exc:  # the one boundary: nothing foreign gets past it
        raise DownloadError(
            f"downloading {file.repo}/{file.filename} from {url} failed: "
            f"{type(exc).__name__}: {exc}",
            model=file.repo,
        ) from exc
    if on_resumed is not None:
        on_resumed(resumed)
    return digest


@contextlib.contextmanager
def _exclusive(file: HubFile, partial: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(partial) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise DownloadError(
            f"{file.repo}/{file.filename} is already being downloaded to {partial.parent}",
            model=file.repo,
        ) from exc
    try:
        yield
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            Path(str(partial) + ".lock").unlink()


def _download_locked(
    file: HubFile,
    dest: Path,
    partial: Path,
    url: str,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
    transport: httpx.BaseTransport | None,
) -> tuple[str, int]:
    """The sha256 of the verified file at ``dest``, and how many of its bytes were resumed."""
    meta_path = partial.with_name(partial.name + ".json")
    meta = _PartialMeta(file.repo, file.filename, file.size, file.sha256)
    _discard_stale_partial(partial, meta_path, meta)
    _check_disk_space(file, partial)
    try:
        meta_path.write_text(json.dumps(asdict(meta)), encoding="utf-8")
        with open(partial, "ab+") as handle:
            target = _Target(handle, file.size, progress)
            target.rehash(cancel, file)
            _fetch(file, url, target, cancel, transport)
    except ChecksumMismatch:
        _delete(partial, meta_path)
        raise
    except OSError as exc:
        _delete_if_empty(partial, meta_path)
        raise DownloadError(f"cannot write {partial}: {exc}", model=file.repo) from exc
    except BaseException:
        _delete_if_empty(partial, meta_path)  # nothing to resume: leave nothing behind
        raise

    if target.size != file.size:
        _delete(partial, meta_path)
        raise ChecksumMismatch(
            f"{file.repo}/{file.filename}: got {target.size} bytes, the Hub announced {file.size}",
            model=file.repo,
        )
    digest = target.hexdigest()
    if file.sha256 is not None and digest != file.sha256.lower():
        _delete(partial, meta_path)
        raise ChecksumMismatch(
            f"{file.repo}/{file.filename}: sha256 {digest} does not match the Hub's "
            f"{file.sha256}; the corrupt download was deleted",
            model=file.repo,
        )
    try:
        os.replace(partial, dest)
    except OSError as exc:
        raise DownloadError(f"cannot move the download to {dest}: {exc}", model=file.repo) from exc
    _delete(meta_path)
    return digest, target.resumed


class _Target:
    """The partial file being written, with its running sha256 and the progress reporter."""

    def __init__(self, handle: BinaryIO, total: int, progress: ProgressFn | None) -> None:
        self.handle = handle
        self.total = total
        self.size = 0
        self.resumed = 0
        """Bytes an earlier call left in the file that this one kept (0 once it starts over)."""
        self._hash = hashlib.sha256()
        self._progress = progress
        self._step = max(total // MAX_PROGRESS_EVENTS, 1)
        self._reported = -1

    def rehash(self, cancel: threading.Event | None, file: HubFile) -> None:
        """Hash what an earlier call left in the file (a partial bigger than the file is reset)."""
        self.handle.seek(0, os.SEEK_END)
        if self.handle.tell() > self.total:
            self.reset()
            return
        self.handle.seek(0)
        while block := self.handle.read(1 << 20):
            _check_cancel(file, cancel)
            self._hash.update(block)
            self.size += len(block)
        self.resumed = self.size
        self.report(force=True)

    def append(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        self.report()

    def reset(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        self._hash = hashlib.sha256()
        self.size = 0
        self.resumed = 0
        self.report(force=True)

    def report(self, *, force: bool = False) -> None:
        if self._progress is None:
            return
        done = self.size >= self.total
        if force or done or self.size - self._reported >= self._step:
            if self.size != self._reported:
                self._reported = self.size
                self._progress(self.size, self.total)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _fetch(
    file: HubFile,
    url: str,
    target: _Target,
    cancel: threading.Event | None,
    transport: httpx.BaseTransport | None,
) -> None:
    if target.size >= file.size:
        return  # an earlier call got every byte; verification decides
    _import_hub()
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    address = hf_hub_url(file.repo, file.filename, revision=file.revision, endpoint=url)
    headers = {**build_hf_headers(library_name="llmspell"), "Accept-Encoding": "identity"}
    failures = 0
    timeout = httpx.Timeout(API_TIMEOUT, connect=10.0)
    with httpx.Client(
        follow_redirects=True, timeout=timeout, headers=headers, transport=transport
    ) as client:
        while True:
            before = target.size
            try:
                _transfer(client, address, file, target, cancel)
                return
            except _Transient as exc:
                failures = 0 if target.size > before else failures + 1
                if failures > len(_RETRY_DELAYS):
                    if exc.unreachable:
                        raise _unreachable(file.repo, url, exc) from exc
                    raise DownloadError(
                        f"downloading {file.repo}/{file.filename} from {url} failed after "
                        f"{target.size} of {file.size} bytes: {exc}; pull again to resume",
                        model=file.repo,
                    ) from exc
                if failures:
                    (cancel or threading.Event()).wait(_RETRY_DELAYS[failures - 1])
                    _check_cancel(file, cancel)


def _transfer(
    client: httpx.Client,
    address: str,
    file: HubFile,
    target: _Target,
    cancel: threading.Event | None,
) -> None:
    """One GET of the rest of the file, appended to ``target``."""
    start = target.size
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        with (
            HangUp(cancel) as hang_up,
            client.stream(
                "GET", address, headers=headers, extensions=hang_up.extensions
            ) as response,
        ):
            hang_up.attach(response)
            status = response.status_code
            if status == 416 and start:
                # The partial is at least as long as the remote file: verification decides.
                if start >= file.size:
                    return
                target.reset()
                raise _Transient("the Hub refused to resume (416); restarting from the beginning")
            if status >= 400:
                _raise_for_status(response, file)
            if start and status != 206:
                target.reset()  # the server ignored the Range header: start over
            # As received (no re-chunking), so that bytes that arrived before a broken
            # connection reach the partial file instead of dying in a buffer.
            for chunk in response.iter_raw():
                _check_cancel(file, cancel)
                if target.size + len(chunk) > file.size:
                    raise ChecksumMismatch(
                        f"{file.repo}/{file.filename}: the Hub sent more than the "
                        f"{file.size} bytes it announced",
                        model=file.repo,
                    )
                target.append(chunk)
    except httpx.TransportError as exc:
        _check_cancel(file, cancel)
        if target.size == start and isinstance(exc, httpx.ConnectError):
            raise _Transient(str(exc), unreachable=True) from exc
        raise _Transient(f"connection lost ({type(exc).__name__}: {exc})") from exc
    if target.size < file.size:
        raise _Transient(f"the transfer ended early at {target.size} of {file.size} bytes")


def _raise_for_status(response: httpx.Response, file: HubFile) -> None:
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    what = f"{file.repo}/{file.filename}"
    if status in (408, 429) or status >= 500:
        raise _Transient(f"the Hub answered {status} for {what}")
    if code == "RepoNotFound":
        raise ModelNotFound(
            f"repository {file.repo} not found on the Hugging Face Hub", model=file.repo
        )
    if code == "RevisionNotFound":
        raise ModelNotFound(f"revision {file.revision} of {file.repo} not found", model=file.repo)
    if code == "EntryNotFound" or status == 404:
        raise DownloadError(f"{what} not found at revision {file.revision}", model=file.repo)
    if status in (401, 403):
        raise DownloadError(
            f"access to {what} denied ({status}): the repository may be gated or private; "
            "accept its terms on huggingface.co and set HF_TOKEN",
            model=file.repo,
        )
    raise DownloadError(f"the Hub answered {status} for {what}", model=file.repo)


def _discard_stale_partial(partial: Path, meta_path: Path, meta: _PartialMeta) -> None:
    if not partial.exists():
        return
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old != asdict(meta):
        _delete(partial, meta_path)


def _check_disk_space(file: HubFile, partial: Path) -> None:
    import shutil

    have = partial.stat().st_size if partial.exists() else 0
    needed = file.size - have
    try:
        free = shutil.disk_usage(partial.parent).free
    except OSError:
        return
    if needed > free:
        raise DownloadError(
            f"not enough disk space in {partial.parent} for {file.repo}/{file.filename}: "
            f"{needed} bytes needed, {free} free",
            model=file.repo,
        )


def _delete(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _delete_if_empty(partial: Path, meta_path: Path) -> None:
    with contextlib.suppress(OSError):
        if partial.stat().st_size == 0:
            _delete(partial, meta_path)


def _check_cancel(file: HubFile, cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(
            f"download of {file.repo}/{file.filename} cancelled (the partial file is kept "
            "and the next pull resumes it)",
            model=file.repo,
        )


# Errors ---------------------------------------------------------------------------------------


def _check_online(repo: str, url: str) -> None:
    if is_offline():
        raise DownloadError(
            f"cannot download {repo}: Hugging Face Hub offline mode is on ({OFFLINE_ENV}=1); "
            f"unset {OFFLINE_ENV} to reach {url}",
            model=repo,
        )


def _unreachable(repo: str, url: str, exc: BaseException) -> DownloadError:
    return DownloadError(
        f"cannot reach the Hugging Face Hub at {url} (offline?) for {repo}: {exc}",
        model=repo,
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [httpx.TransportError, ConnectionError, TimeoutError]
    try:  # huggingface_hub 2 talks through httpx2, 1.x through httpx
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def _translate(
    exc: Exception, *, repo: str, url: str, revision: str | None = None
) -> LLMSpellError:
    """The llmspell error for a huggingface_hub (or HTTP client) exception."""
    from huggingface_hub import errors as hf

    if isinstance(exc, LLMSpellError):
        return exc
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return DownloadError(
            f"cannot reach the Hugging Face Hub at {url} for {repo}: offline mode is on "
            f"({OFFLINE_ENV} was set when the program started)",
            model=repo,
        )
    if isinstance(exc, hf.GatedRepoError):
        return DownloadError(
            f"{repo} is gated: accept its terms on huggingface.co and set HF_TOKEN", model=repo
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelNotFound(
            f"repository {repo} not found on the Hugging Face Hub at {url}", model=repo
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelNotFound(f"revision {revision or 'main'} of {repo} not found", model=repo)
    if isinstance(exc, hf.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "an error"
        return DownloadError(
            f"the Hugging Face Hub at {url} answered {status} for {repo}", model=repo
        )
    if isinstance(exc, _network_errors()):
        return _unreachable(repo, url, exc)
    if isinstance(exc, hf.HFValidationError):
        return DownloadError(f"invalid repository name {repo!r}: {exc}", model=repo)
    return DownloadError(
        f"looking up {repo} on the Hugging Face Hub at {url} failed: {type(exc).__name__}: {exc}",
        model=repo,
    )
