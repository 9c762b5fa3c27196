"""The GGUF backend: llama-cpp-python models, each in its own runner process, in a local store.

:class:`LlamaCppBackend` coordinates the pieces: the store (:mod:`.store`) and its ids
(:mod:`.ids`), pulls (:mod:`.pull`), the cache of loaded models (:mod:`.cache`), whose entries
are model runners (:mod:`.runner`: a llama.cpp that aborts takes its runner down, not the
kernel), and the generation loop (:mod:`.generation`, run inside the runner). What a load may
take is checked here first: the file's header (:mod:`.hparams`), the context size against what
the model was trained for and ``max_context``, and the memory the load needs against what the
machine has (:mod:`.memory`). The backend is synchronous and thread-safe: the kernel calls it
from worker threads.
Generations on one model take turns, first come first served (:mod:`.turns`; a llama.cpp
context is not thread-safe): a stream waiting for its turn yields ``Chunk(queued=N)`` at least
every 0.25 s, and a stream whose reader stopped reading gives its turn up to a waiting request
after ``stall_seconds``. A consumer that calls ``close()`` on a stream stops the generation at
once and leaves the model ready for the next one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..embedding import check_inputs
from ..errors import InvalidRequest, LLMSpellError, ModelLoadError, ModelNotFound
from ..options import with_defaults
from ..spec import ModelSpec, parse_spec
from ..types import (
    AvailableModel,
    BackendHealth,
    Chunk,
    ChunkStream,
    Embeddings,
    EmbedMetrics,
    GenerationOptions,
    LoadedModel,
    Message,
    ModelInfo,
    Progress,
    ProgressCallback,
    PullResult,
    Removed,
)
from .cache import Lease, ModelCache
from .cancel import check_cancel
from .generation import (
    MIN_CONTEXT,
    SAMPLING_DEFAULTS,
    check_messages,
    check_prompt,
    context_size,
)
from .ids import BACKEND, find_installed, id_from_file, import_id
from .memory import check_fits
from .metadata import quantization_of, read_metadata
from .pull import PullProgress, download_and_install, pull_target
from .runner import Bounds, Runner
from .runner_messages import ChatRequest, CompletionRequest, Load
from .store import ModelStore, StoredModel
from .templates import choose_template
from .topology import cpu_count

log = logging.getLogger(__name__)


class LlamaCppBackend:
    """GGUF models run in-process by llama-cpp-python."""

    name = BACKEND

    def __init__(self, config: Config) -> None:
        self.config = config
        self.options = config.providers.llamacpp.options
        self.store = ModelStore(config.model_directory())
        freed = self.store.clean_leftovers()
        if freed:
            log.info("removed %d bytes of imports that killed processes left unfinished", freed)
        self.bounds = Bounds(
            load_seconds=self.options.load_timeout, render_seconds=self.options.render_timeout
        )
        self.cache = ModelCache(
            max_loaded=self.options.max_loaded_models,
            keep_alive=self.options.keep_alive,
            stall_seconds=self.options.stall_seconds,
        )

    # Queries ------------------------------------------------------------------------------

    def health(self) -> BackendHealth:
        try:  # (not imported here: llama.cpp runs in the runners)
            if importlib.util.find_spec("llama_cpp") is None:
                raise ImportError("no module named llama_cpp")
            version = importlib.metadata.version("llama_cpp_python")
        except Exception as exc:  # health never raises: a broken install is a reason
            return BackendHealth(
                name=BACKEND, available=False, reason=f"llama-cpp-python is not installed: {exc}"
            )
        try:
            count = len(self.store.list())
        except OSError as exc:
            return BackendHealth(
                name=BACKEND,
                available=False,
                version=version,
                reason=f"model directory {self.store.root} cannot be read: {exc}",
            )
        return BackendHealth(
            name=BACKEND,
            available=True,
            version=version,
            models=count,
            loaded=len(self.cache.snapshot()),
            details={
                "model_directory": str(self.store.root),
                "n_ctx": self.options.n_ctx,
                "n_threads": self.options.n_threads or cpu_count(),
                "max_loaded_models": self.options.max_loaded_models,
                "keep_alive": self.options.keep_alive,
                "stall_seconds": self.options.stall_seconds,
                "unfinished_import_bytes": self.store.unfinished_import_bytes(),
            },
        )

    def list_models(self) -> list[ModelInfo]:
        return [self._row(model) for model in self._installed()]

    def has_model(self, spec: ModelSpec) -> bool:
        try:
            self._find(spec)
        except LLMSpellError:
            return False
        return True

    def available(self, *, recommended_only: bool = False) -> list[AvailableModel]:
        from .catalog import entries

        return [
            AvailableModel(
                name=entry.name,
                backend=BACKEND,
                description=entry.description,
                variants=entry.quants,
                size_bytes=entry.size_bytes,
                recommended=entry.recommended,
                source=f"hf:{entry.repo}",
            )
            for entry in entries()
            if entry.recommended or not recommended_only
        ]

    def info(self, spec: ModelSpec) -> ModelInfo:
        return self._describe(self._find(spec))

    def _describe(self, model: StoredModel) -> ModelInfo:
        """``info`` of an installed model."""
        metadata = read_metadata(model.path)
        try:
            template: str | None = choose_template(model.id, metadata.values).source
            template_error = None
        except LLMSpellError as exc:
            template, template_error = None, exc.message
        loaded = {e.model_id: e for e in self.cache.snapshot()}.get(model.id)
        details: dict[str, Any] = {
            "path": str(model.path),
            "name": metadata.name,
            "parameter_count": metadata.parameter_count,
            "manifest": model.manifest.to_dict(),
        }
        if template_error:
            details["chat_template_error"] = template_error
        if loaded is not None:
            details["n_ctx"] = loaded.model.n_ctx
            details["expires_at"] = loaded.expires_at
            details["runner_pid"] = loaded.model.pid
            if loaded.model.conversation_cache is not None:
                details["conversation_cache"] = loaded.model.conversation_cache
        return ModelInfo(
            id=model.id,
            backend=BACKEND,
            size_bytes=model.manifest.size,
            quantization=metadata.quantization or model.manifest.quantization,
            modified_at=model.manifest.installed_at,
            loaded=loaded is not None,
            format="gguf",
            family=metadata.family,
            architecture=metadata.architecture,
            parameter_size=metadata.parameter_size,
            context_length=metadata.context_length,
            chat_template=template,
            details=details,
        )

    # Store changes ------------------------------------------------------------------------

    def import_model(self, path: Path, name: str | None = None, *, link: bool = False) -> ModelInfo:
        """Register the GGUF at ``path`` as ``name`` (else an id derived from the file name).

        ``link`` hard-links (else symlinks) the file instead of copying it.
        """
        source = Path(path).expanduser()
        model_id = import_id(name) if name is not None else id_from_file(source)
        if _is_file(source):  # the user's file, checked before anything is copied
            read_metadata(source).check_loadable(source)
            if self.options.check_imports:
                self._probe(source, model_id)

        def inspect(file: Path) -> dict[str, Any]:
            return read_metadata(file).manifest_fields(quantization_of(None, source.name))

        model = self.store.import_file(source, model_id, link=link, inspect=inspect)
        return self._describe(model)

    def _probe(self, source: Path, model_id: str) -> None:
        """Load ``source`` once in a runner (with the smallest context): a file llama.cpp
        cannot load, or whose weights compute nothing, is refused naming the user's file."""
        load = self._load_settings(model_id, source, MIN_CONTEXT, stored=False)
        try:
            Runner(load, self.bounds).close()
        except LLMSpellError as exc:
            message = exc.message if str(source) in exc.message else f"{source}: {exc.message}"
            raise ModelLoadError(
                f"{message} (not imported)", model=model_id, backend=BACKEND
            ) from exc

    def copy(self, spec: ModelSpec, name: str) -> ModelInfo:
        """``name`` for the installed model ``spec`` names: the same blob, no bytes copied."""
        model = self._find(spec)
        return self._describe(self.store.copy(model.id, import_id(name)))

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        """Download a catalog model or ``hf:`` repo into the store (see the Backend protocol
        and :mod:`.pull`). A file the store holds already under another id is not downloaded
        again; ``force`` downloads it anyway, and the installed model stays listed and usable
        until the new download is verified."""
        started = time.perf_counter()
        target = pull_target(spec, quantization)
        report = PullProgress(target.model_id, progress)
        existing = self.store.get(target.model_id)
        if existing is not None and not force:
            report("done", existing.manifest.size, existing.manifest.size)
            return PullResult(model=self._describe(existing), bytes=0, seconds=0.0)

        model, downloaded, resumed = download_and_install(
            self.store, target, report, cancel, reuse=not force
        )
        if existing is not None:
            self.cache.unload(target.model_id)  # the next load reads the new file
        size = model.manifest.size
        report.past_return("done", size, size)
        return PullResult(
            model=self._describe(model),
            bytes=downloaded,
            seconds=round(time.perf_counter() - started, 3),
            resumed_bytes=resumed,
        )

    def remove(self, spec: ModelSpec) -> Removed:
        """Delete the installed model; for a model that is not installed, delete what an
        unfinished pull of it left (``unfinished_bytes`` of the result then says how much)."""
        try:
            model = self._find(spec)
        except ModelNotFound:
            unfinished = self._discard_unfinished(spec)
            if unfinished is None:
                raise
            return unfinished
        self.cache.unload(model.id)
        self.store.remove(model.id)
        return Removed(model.id)

    def _discard_unfinished(self, spec: ModelSpec) -> Removed | None:
        try:
            model_id = pull_target(spec, None).model_id
        except LLMSpellError:
            return None  # not something a pull could have left
        freed = self.store.discard_unfinished(model_id)
        return None if freed is None else Removed(model_id, unfinished_bytes=freed)

    # Memory -------------------------------------------------------------------------------

    def load(self, spec: ModelSpec, progress: ProgressCallback | None = None) -> LoadedModel:
        model = self._find(spec)
        with self._acquire(model, None, progress):
            pass
        return self._loaded_row(model.id)

    def unload(self, spec: ModelSpec) -> str:
        model = self._find(spec)
        self.cache.unload(model.id)
        return model.id

    def loaded(self) -> list[LoadedModel]:
        rows = []
        for e in self.cache.snapshot():
            states = e.model.conversation_cache
            rows.append(
                LoadedModel(
                    id=e.model_id,
                    backend=BACKEND,
                    size_bytes=e.size_bytes,
                    expires_at=e.expires_at,
                    conversation_cache_bytes=None if states is None else states["bytes"],
                )
            )
        return rows

    @property
    def load_count(self) -> int:
        """How many times a model file was actually loaded into memory."""
        return self.cache.loads

    # Generation ---------------------------------------------------------------------------

    def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        check_messages(messages)
        model = self._find(spec)
        template = choose_template(model.id, read_metadata(model.path).values)
        return self._generate(model, ChatRequest(template, tuple(messages)), options, cancel)

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> ChunkStream:
        check_prompt(prompt)
        model = self._find(spec)
        return self._generate(model, CompletionRequest(prompt), options, cancel)

    def _generate(
        self,
        model: StoredModel,
        prompt: ChatRequest | CompletionRequest,
        options: GenerationOptions,
        cancel: threading.Event | None,
    ) -> ChunkStream:
        options = with_defaults(options, SAMPLING_DEFAULTS)
        if options.num_ctx is not None:
            self._check_context(model, options.num_ctx)
        # Load now, so that a missing or broken model fails the call itself; the stream takes
        # its own lease when it starts (a stream that is never started holds nothing).
        with self._acquire(model, context_size(options.num_ctx), None) as lease:
            load_seconds = lease.load_seconds
        return self._stream(model, prompt, options, load_seconds, cancel)

    def _stream(
        self,
        model: StoredModel,
        prompt: ChatRequest | CompletionRequest,
        options: GenerationOptions,
        load_seconds: float,
        cancel: threading.Event | None,
    ) -> Generator[Chunk, None, None]:
        requested = time.perf_counter()
        with self._acquire(model, context_size(options.num_ctx), None) as lease:
            turn = lease.entry.turns.join()
            try:
                ahead = turn.wait(last=0)
                while ahead:  # the model is busy: say how many are ahead until our turn
                    check_cancel("generation with", model.id, cancel)
                    turn.suspend()
                    yield Chunk(text="", queued=ahead)
                    turn.resume()
                    ahead = turn.wait(last=ahead)
                check_cancel("generation with", model.id, cancel)
                queue_seconds = time.perf_counter() - requested - lease.load_seconds
                runner: Runner = lease.model
                chunks = runner.generate(
                    prompt,
                    options,
                    load_seconds=load_seconds + lease.load_seconds,
                    queue_seconds=max(queue_seconds, 0.0),
                    cancel=cancel,
                )
                try:
                    for chunk in chunks:
                        if chunk.done:  # nothing left to generate: the next may go now
                            turn.leave()
                            yield chunk
                            break
                        turn.pieces += bool(chunk.text)
                        turn.suspend()
                        yield chunk
                        turn.resume()
                finally:
                    chunks.close()
            finally:
                turn.leave()

    # Embeddings ---------------------------------------------------------------------------

    def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        normalize: bool = True,
        cancel: threading.Event | None = None,
    ) -> Embeddings:
        """One vector per text, from the runner's embedding context (see :mod:`.embedding`);
        it takes its turn on the model like a generation."""
        inputs = tuple(check_inputs(texts))
        model = self._find(spec)
        requested = time.perf_counter()
        with self._acquire(model, None, None) as lease:
            turn = lease.entry.turns.join()
            try:
                ahead = turn.wait(last=0)
                while ahead:  # the model is busy: wait for our turn, cancellable
                    check_cancel("embedding with", model.id, cancel)
                    ahead = turn.wait(last=ahead)
                check_cancel("embedding with", model.id, cancel)
                queued = max(time.perf_counter() - requested - lease.load_seconds, 0.0)
                runner: Runner = lease.model
                done = runner.embed(inputs, truncate=truncate, normalize=normalize, cancel=cancel)
            finally:
                turn.leave()
        return Embeddings(
            model=model.id,
            vectors=done.vectors,
            metrics=EmbedMetrics(
                prompt_tokens=done.prompt_tokens,
                load_seconds=round(lease.load_seconds, 6),
                total_seconds=round(time.perf_counter() - requested, 6),
                queue_seconds=round(queued, 6),
                truncated_inputs=done.truncated,
            ),
        )

    # Helpers ------------------------------------------------------------------------------

    def _installed(self) -> list[StoredModel]:
        try:
            return self.store.list()
        except OSError as exc:
            from ..errors import BackendUnavailable

            raise BackendUnavailable(
                f"model directory {self.store.root} cannot be read: {exc}", backend=BACKEND
            ) from exc

    def _find(self, spec: ModelSpec) -> StoredModel:
        """The installed model ``spec`` names (see the lookup rules in :mod:`.ids`)."""
        return find_installed(parse_spec(spec), self._installed(), self.store.root)

    def _acquire(
        self, model: StoredModel, n_ctx: int | None, progress: ProgressCallback | None
    ) -> Lease:
        def started() -> None:
            if progress is not None:
                progress(Progress(model=model.id, phase="loading"))

        lease = self.cache.acquire(
            model.id,
            lambda size: self._start_runner(model, size),
            n_ctx=n_ctx,
            default_n_ctx=max(self.options.n_ctx, MIN_CONTEXT) if self.options.n_ctx else 0,
            size_bytes=model.manifest.size,
            on_load_start=started,
        )
        if progress is not None and lease.load_seconds:
            try:
                progress(Progress(model=model.id, phase="done"))
            except BaseException:  # e.g. Cancelled raised by the caller's callback
                lease.release()
                raise
        return lease

    def _check_context(self, model: StoredModel, n_ctx: int) -> None:
        """``n_ctx`` at most what the model was trained for and ``max_context``."""
        trained = read_metadata(model.path).context_length
        if trained and n_ctx > trained:
            raise InvalidRequest(
                f"num_ctx {n_ctx} is more than {model.id}'s context length {trained}"
                " (what it was trained for): ask for at most that",
                model=model.id,
            )
        ceiling = self.options.max_context
        if ceiling and n_ctx > ceiling:
            raise InvalidRequest(
                f"num_ctx {n_ctx} is more than {ceiling}, the largest context this machine"
                " allows (providers.llamacpp.options.max_context)",
                model=model.id,
            )

    def _start_runner(self, model: StoredModel, n_ctx: int) -> Runner:
        """A runner with ``model`` loaded, once its header and the memory it needs are checked."""
        metadata = read_metadata(model.path)
        metadata.check_loadable(model.id)
        # A request's num_ctx was checked already: this clamps the configured default (0: the
        # model's trained length, as llama.cpp takes it).
        trained = metadata.context_length
        n_ctx = n_ctx or trained or 0
        n_ctx = min(n_ctx, trained or n_ctx, self.options.max_context or n_ctx)
        check_fits(model.id, metadata, model.manifest.size, n_ctx)
        return Runner(self._load_settings(model.id, model.path, n_ctx), self.bounds)

    def _load_settings(self, model_id: str, path: Path, n_ctx: int, *, stored: bool = True) -> Load:
        return Load(
            model_id=model_id,
            path=path,
            n_ctx=n_ctx,
            n_threads=self.options.n_threads or cpu_count(),
            n_gpu_layers=self.options.n_gpu_layers,
            conversation_cache_bytes=self.options.conversation_cache_bytes,
            reproducible=self.options.reproducible,
            stored=stored,
        )

    def _row(self, model: StoredModel) -> ModelInfo:
        manifest = model.manifest
        return ModelInfo(
            id=model.id,
            backend=BACKEND,
            size_bytes=manifest.size,
            quantization=manifest.quantization,
            modified_at=manifest.installed_at,
            loaded=self.cache.is_loaded(model.id),
            format="gguf",
            family=manifest.architecture,
            architecture=manifest.architecture,
            parameter_size=manifest.parameter_size,
            context_length=manifest.context_length,
            details={"path": str(model.path), "source": manifest.source},
        )

    def _loaded_row(self, model_id: str) -> LoadedModel:
        for row in self.loaded():
            if row.id == model_id:
                return row
        raise ModelLoadError(f"{model_id} was unloaded right after loading", model=model_id)

    def close(self) -> None:
        self.cache.close()


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a path the system refuses (too long...): the store's
    import says what is wrong with it."""
    try:
        return path.is_file()
    except OSError:
        return False
