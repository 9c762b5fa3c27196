"""The embedded GGUF backend: llama-cpp-python in this process, models in a local store.

Every llama_cpp exception is translated here (``_load_llama`` and ``_run``), with
``raise ... from exc``. The backend is synchronous and thread-safe: the kernel calls it from
worker threads. Generations on one model are serialized (a llama.cpp context is not
thread-safe); a consumer that calls ``close()`` on a stream stops the generation at once and
leaves the model ready for the next one.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import (
    Cancelled,
    GenerationError,
    InvalidModelSpec,
    InvalidRequest,
    LLMSpellError,
    ModelLoadError,
    ModelNotFound,
)
from ..spec import ModelSpec, parse_spec
from ..types import (
    AvailableModel,
    BackendHealth,
    Chunk,
    GenerationOptions,
    LoadedModel,
    Message,
    Metrics,
    ModelInfo,
    Progress,
    ProgressCallback,
    PullResult,
)
from .cache import Lease, ModelCache
from .metadata import GGUFMetadata, quantization_of, read_metadata
from .native import native_errors, prepare_llama_cpp
from .store import INCOMING_SUFFIX, Manifest, ModelStore, StoredModel, utc_now, validate_id
from .templates import ChatTemplate, choose_template, format_messages

if TYPE_CHECKING:
    from llama_cpp import Llama

BACKEND = "llamacpp"
HF_DEFAULT_QUANT = "Q4_K_M"
MIN_CONTEXT = 256
_ROLES = ("system", "user", "assistant")


class RemovedId(str):
    """The id :meth:`LlamaCppBackend.remove` returns when what it deleted was only an
    unfinished download (``unfinished_bytes`` of it), not an installed model."""

    unfinished_bytes: int

    def __new__(cls, model_id: str, *, unfinished_bytes: int) -> RemovedId:
        removed = super().__new__(cls, model_id)
        removed.unfinished_bytes = unfinished_bytes
        return removed


class LlamaCppBackend:
    """GGUF models run in-process by llama-cpp-python."""

    name = BACKEND

    def __init__(self, config: Config) -> None:
        self.config = config
        self.options = config.providers.llamacpp.options
        self.store = ModelStore(config.model_directory())
        self.cache = ModelCache(
            max_loaded=self.options.max_loaded_models, keep_alive=self.options.keep_alive
        )

    # Queries ------------------------------------------------------------------------------

    def health(self) -> BackendHealth:
        try:
            import llama_cpp

            version = str(llama_cpp.__version__)
        except Exception as exc:  # health never raises: a broken install is a reason
            return BackendHealth(
                name=BACKEND, available=False, reason=f"llama-cpp-python cannot be imported: {exc}"
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
                "n_threads": self.options.n_threads or _cpu_count(),
                "max_loaded_models": self.options.max_loaded_models,
                "keep_alive": self.options.keep_alive,
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
        model = self._find(spec)
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
            details["n_ctx"] = loaded.n_ctx
            details["expires_at"] = loaded.expires_at
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
        model_id = _import_id(name) if name is not None else _id_from_file(source)

        def inspect(file: Path) -> dict[str, Any]:
            metadata = read_metadata(file)
            return _manifest_fields(metadata, quantization_of(None, source.name))

        model = self.store.import_file(source, model_id, link=link, inspect=inspect)
        return self.info(ModelSpec.parse(model.id))

    def pull(
        self,
        spec: ModelSpec,
        progress: ProgressCallback | None = None,
        *,
        force: bool = False,
        quantization: str | None = None,
        cancel: threading.Event | None = None,
    ) -> PullResult:
        """Download a catalog model or ``hf:`` repo into the store (see the Backend protocol).

        The file is downloaded beside its final place (``<file>.incoming``, bytes in progress in
        ``<file>.incoming.partial``, kept when the pull is interrupted so the next one resumes)
        and installed only once its size, sha256 and GGUF header check out; with ``force`` the
        installed model stays listed and usable until then.
        """
        from . import hub

        started = time.perf_counter()
        model_id, repo, source, quant = self._pull_target(spec, quantization)

        def emit(phase: str, completed: int | None = None, total: int | None = None) -> None:
            if progress is not None:
                progress(Progress(model=model_id, phase=phase, completed=completed, total=total))

        existing = self.store.get(model_id)
        if existing is not None and not force:
            emit("done", existing.manifest.size, existing.manifest.size)
            return PullResult(model=self._info_of(existing), bytes=0, seconds=0.0)

        _check_cancel("pull of", model_id, cancel)
        emit("resolving")
        file = hub.resolve(repo, quant)
        _check_cancel("pull of", model_id, cancel)
        incoming = self.store.incoming_path(model_id, file.filename)
        try:
            emit("downloading", 0, file.size)
            digest = hub.download(
                file, incoming, lambda done, total: emit("downloading", done, total), cancel
            )
            try:
                # Every byte is here and verified: from now on an interrupt has nothing left
                # to save, so the pull finishes (a matter of milliseconds).
                emit("verifying", file.size, file.size)
            except Cancelled:
                progress = None
            try:
                metadata = read_metadata(incoming)
            except ModelLoadError:
                incoming.unlink(missing_ok=True)  # intact bytes, but not a model llama.cpp reads
                raise
            manifest = Manifest(
                id=model_id,
                source="hf" if source == "hf" else "catalog",
                file=incoming.name.removesuffix(INCOMING_SUFFIX),
                size=incoming.stat().st_size,
                sha256=digest,
                repo=file.repo,
                revision=file.revision,
                pulled_at=utc_now(),
                **_manifest_fields(metadata, file.quant.upper() or quant),
            )
            model = self.store.install_download(incoming, manifest)
        finally:
            self.store.tidy(model_id)
        if existing is not None:
            self.cache.unload(model_id)  # the next load reads the new file
        try:
            emit("done", manifest.size, manifest.size)
        except Cancelled:
            pass
        return PullResult(
            model=self._info_of(model),
            bytes=manifest.size,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _pull_target(self, spec: ModelSpec, quantization: str | None) -> tuple[str, str, str, str]:
        """(store id, repo, source, quant) of what pulling ``spec`` downloads."""
        from . import catalog

        quant = quantization or spec.variant
        if spec.is_hf:
            assert spec.hf_repo is not None
            repo, source = spec.hf_repo, "hf"
            quant = (quant or HF_DEFAULT_QUANT).upper()
            model_id = f"hf:{repo}:{quant}"
        else:
            entry = catalog.lookup(spec.model)
            if entry is None:
                raise ModelNotFound(
                    f"{spec.model!r} is not in the llamacpp catalog: see `llmspell model"
                    " available --backend llamacpp`, or pull any GGUF repo as hf:ORG/REPO[:QUANT]",
                    model=spec.name,
                    backend=BACKEND,
                )
            repo, source = entry.repo, "catalog"
            quant = quant or entry.default_quant
            quant = next((q for q in entry.quants if q.lower() == quant.lower()), quant.upper())
            model_id = f"{entry.name}:{quant}"
        validate_id(model_id)
        return model_id, repo, source, quant

    def remove(self, spec: ModelSpec) -> str:
        """Delete the installed model; for a model that is not installed, delete what an
        unfinished pull of it left (the returned id then says so: see :class:`RemovedId`)."""
        try:
            model = self._find(spec)
        except ModelNotFound:
            unfinished = self._discard_unfinished(spec)
            if unfinished is None:
                raise
            return unfinished
        self.cache.unload(model.id)
        self.store.remove(model.id)
        return model.id

    def _discard_unfinished(self, spec: ModelSpec) -> RemovedId | None:
        try:
            model_id = self._pull_target(spec, None)[0]
        except LLMSpellError:
            return None  # not something a pull could have left
        freed = self.store.discard_unfinished(model_id)
        return None if freed is None else RemovedId(model_id, unfinished_bytes=freed)

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
        return [
            LoadedModel(
                id=e.model_id, backend=BACKEND, size_bytes=e.size_bytes, expires_at=e.expires_at
            )
            for e in self.cache.snapshot()
        ]

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
    ) -> Iterator[Chunk]:
        if not messages:
            raise InvalidRequest("chat needs at least one message")
        for message in messages:
            if message.role not in _ROLES or not isinstance(message.content, str):
                raise InvalidRequest(
                    f"invalid message {message!r}: role must be one of {', '.join(_ROLES)}"
                    " and content a string"
                )
        model = self._find(spec)
        template = choose_template(model.id, read_metadata(model.path).values)
        _check_options(options)

        def prompt(llama: Llama) -> tuple[list[int], tuple[str, ...], tuple[int, ...]]:
            return _chat_prompt(llama, template, messages)

        return self._generate(model, prompt, options, cancel)

    def complete(
        self,
        spec: ModelSpec,
        prompt: str,
        options: GenerationOptions,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[Chunk]:
        if not isinstance(prompt, str):
            raise InvalidRequest(f"prompt must be a string, not {type(prompt).__name__}")
        model = self._find(spec)
        _check_options(options)

        def tokens(llama: Llama) -> tuple[list[int], tuple[str, ...], tuple[int, ...]]:
            return llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True), (), ()

        return self._generate(model, tokens, options, cancel)

    def _generate(
        self,
        model: StoredModel,
        prompt: Callable[[Llama], tuple[list[int], tuple[str, ...], tuple[int, ...]]],
        options: GenerationOptions,
        cancel: threading.Event | None,
    ) -> Iterator[Chunk]:
        # Load now, so that a missing or broken model fails the call itself; the stream takes
        # its own lease when it starts (a stream that is never started holds nothing).
        with self._acquire(model, _context_size(options.num_ctx), None) as lease:
            load_seconds = lease.load_seconds
        return self._stream(model, prompt, options, load_seconds, cancel)

    def _stream(
        self,
        model: StoredModel,
        prompt: Callable[[Llama], tuple[list[int], tuple[str, ...], tuple[int, ...]]],
        options: GenerationOptions,
        load_seconds: float,
        cancel: threading.Event | None,
    ) -> Iterator[Chunk]:
        with self._acquire(model, _context_size(options.num_ctx), None) as lease:
            with lease.entry.generation_lock:
                llama: Llama = lease.model
                try:
                    tokens, stops, stop_ids = prompt(llama)
                except LLMSpellError:
                    raise
                except Exception as exc:
                    raise GenerationError(
                        f"{model.id}: cannot build the prompt: {exc}",
                        model=model.id,
                        backend=BACKEND,
                    ) from exc
                yield from _run(
                    model.id,
                    llama,
                    tokens,
                    stops,
                    stop_ids,
                    options,
                    load_seconds + lease.load_seconds,
                    cancel,
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

    def _find(self, spec: ModelSpec | str) -> StoredModel:
        """The installed model ``spec`` names (see the lookup rules in the module docs)."""
        parsed = parse_spec(spec)
        base = f"hf:{parsed.hf_repo}" if parsed.is_hf else parsed.model
        models = self._installed()
        if parsed.variant:
            wanted = f"{base}:{parsed.variant}"
            found = [m for m in models if m.id == wanted] or [
                m for m in models if m.id.lower() == wanted.lower()
            ]
            if len(found) == 1:
                return found[0]
        else:
            exact = [m for m in models if m.id == base]
            if exact:
                return exact[0]
            prefix = base.lower() + ":"
            variants = [m for m in models if m.id.lower().startswith(prefix)]
            if len(variants) == 1:
                return variants[0]
            if variants:
                default = _default_quant(parsed)
                chosen = [m for m in variants if m.id.lower() == prefix + default.lower()]
                if chosen:
                    return chosen[0]
                raise ModelNotFound(
                    f"several variants of {base!r} are installed"
                    f" ({', '.join(m.id for m in variants)}): name one",
                    model=parsed.name,
                    backend=BACKEND,
                )
        raise ModelNotFound(
            f"model {parsed.name!r} is not installed in the llamacpp store ({self.store.root}):"
            " pull it, or import a GGUF file",
            model=parsed.name,
            backend=BACKEND,
        )

    def _acquire(
        self, model: StoredModel, n_ctx: int | None, progress: ProgressCallback | None
    ) -> Lease:
        def started() -> None:
            if progress is not None:
                progress(Progress(model=model.id, phase="loading"))

        lease = self.cache.acquire(
            model.id,
            lambda size: self._load_llama(model, size),
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

    def _load_llama(self, model: StoredModel, n_ctx: int) -> Llama:
        prepare_llama_cpp()
        from llama_cpp import Llama

        threads = self.options.n_threads or _cpu_count()
        with native_errors() as errors:
            try:
                return Llama(
                    model_path=str(model.path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=self.options.n_gpu_layers,
                    verbose=False,
                )
            except (ValueError, OSError, RuntimeError) as exc:
                raise ModelLoadError(
                    f"cannot load {model.id} from {model.path}: {_load_failure(exc, errors)}",
                    model=model.id,
                    backend=BACKEND,
                ) from exc

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

    def _info_of(self, model: StoredModel) -> ModelInfo:
        return self.info(ModelSpec.parse(model.id))

    def _loaded_row(self, model_id: str) -> LoadedModel:
        for row in self.loaded():
            if row.id == model_id:
                return row
        raise ModelLoadError(f"{model_id} was unloaded right after loading", model=model_id)

    def close(self) -> None:
        self.cache.close()


def _check_cancel(operation: str, model_id: str, cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` ("pull of ID interrupted") once ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{operation} {model_id} interrupted", model=model_id, backend=BACKEND)


# Generation ------------------------------------------------------------------------------------


class _TokenObserver:
    """A stopping criterion that never stops: it notes when the first token was sampled and
    how many were (each call sees the tokens before the one just sampled)."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.first_at: float | None = None
        self.seen = 0

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.seen = max(self.seen, len(input_ids))
        return False

    @property
    def sampled(self) -> int:
        return 0 if self.first_at is None else self.seen - self.prompt_tokens + 1


def _run(
    model_id: str,
    llama: Llama,
    tokens: list[int],
    stops: tuple[str, ...],
    stop_ids: tuple[int, ...],
    options: GenerationOptions,
    load_seconds: float,
    cancel: threading.Event | None,
) -> Iterator[Chunk]:
    from llama_cpp import StoppingCriteriaList

    context = llama.n_ctx()
    if len(tokens) >= context:
        raise GenerationError(
            f"{model_id}: the prompt has {len(tokens)} tokens, the context holds {context}:"
            " shorten it or set num_ctx",
            model=model_id,
            backend=BACKEND,
        )
    observer = _TokenObserver(len(tokens))
    criteria: list[Callable[[Any, Any], bool]] = [observer]
    if stop_ids:
        criteria.append(lambda ids, _logits: len(ids) > len(tokens) and int(ids[-1]) in stop_ids)
    started = time.perf_counter()
    finish: str | None = None
    try:
        stream: Any = llama.create_completion(
            prompt=tokens,
            stream=True,
            max_tokens=options.max_tokens,
            stop=[*options.stop, *stops],
            stopping_criteria=StoppingCriteriaList(criteria),
            **_sampling(options),
        )
    except ValueError as exc:
        raise GenerationError(f"{model_id}: {exc}", model=model_id, backend=BACKEND) from exc
    try:
        for part in stream:
            _check_cancel("generation with", model_id, cancel)
            choice = part["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice["text"]:
                yield Chunk(text=choice["text"])
    except (ValueError, RuntimeError, OSError) as exc:
        raise GenerationError(
            f"{model_id}: generation failed: {exc}", model=model_id, backend=BACKEND
        ) from exc
    finally:
        stream.close()  # on a consumer's close(): stops llama.cpp before the next token
    ended = time.perf_counter()
    first = observer.first_at or ended
    generated = observer.sampled
    generation_seconds = ended - first
    yield Chunk(
        text="",
        done=True,
        metrics=Metrics(
            prompt_tokens=len(tokens),
            generated_tokens=generated,
            load_seconds=round(load_seconds, 6),
            prompt_seconds=round(first - started, 6),
            generation_seconds=round(generation_seconds, 6),
            total_seconds=round(load_seconds + ended - started, 6),
            time_to_first_token=round(first - started, 6) if observer.first_at else None,
            tokens_per_second=(
                round((generated - 1) / generation_seconds, 3)
                if generated > 1 and generation_seconds > 0
                else None
            ),
            stop_reason=finish or "stop",
        ),
    )


def _chat_prompt(
    llama: Llama, template: ChatTemplate, messages: Sequence[Message]
) -> tuple[list[int], tuple[str, ...], tuple[int, ...]]:
    formatted = format_messages(template, messages, llama)
    tokens = llama.tokenize(
        formatted.prompt.encode("utf-8"), add_bos=formatted.add_bos, special=True
    )
    return tokens, formatted.stop, formatted.stop_token_ids


def _sampling(options: GenerationOptions) -> dict[str, Any]:
    """Options given (not None) as create_completion keywords; the rest keep its defaults."""
    names = {
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "repeat_penalty": options.repeat_penalty,
        "seed": options.seed,
    }
    return {k: v for k, v in names.items() if v is not None}


def _context_size(requested: int | None) -> int | None:
    """llama.cpp rounds context sizes below 256 up to 256, and llama-cpp-python then sizes
    its token buffer from the number asked for and fails; so ask for what will be used."""
    return None if requested is None else max(requested, MIN_CONTEXT)


def _check_options(options: GenerationOptions) -> None:
    if options.max_tokens is not None and options.max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be at least 1, not {options.max_tokens}")
    if options.num_ctx is not None and options.num_ctx < 1:
        raise InvalidRequest(f"num_ctx must be at least 1, not {options.num_ctx}")


# Ids and store helpers ---------------------------------------------------------------------------


def _import_id(name: str) -> str:
    spec = ModelSpec.parse(name)
    if spec.backend not in (None, BACKEND) or spec.provider is not None or spec.is_hf:
        raise InvalidModelSpec(
            f"invalid import name {name!r}: expected name[:variant], e.g. my-gemma:q4",
            model=name,
        )
    return spec.name


def _id_from_file(path: Path) -> str:
    stem = path.name.lower().removesuffix(".gguf")
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "-" for c in stem)
    cleaned = re.sub(r"\.{2,}", ".", cleaned.strip("-._+"))
    if not cleaned:
        raise InvalidModelSpec(
            f"cannot derive a model name from the file name {path.name!r}: pass a name",
            model=path.name,
        )
    return validate_id(cleaned).name


def _default_quant(spec: ModelSpec) -> str:
    if spec.is_hf:
        return HF_DEFAULT_QUANT
    from .catalog import lookup

    entry = lookup(spec.model)
    return entry.default_quant if entry is not None else HF_DEFAULT_QUANT


def _manifest_fields(metadata: GGUFMetadata, fallback_quant: str | None) -> dict[str, Any]:
    return {
        "quantization": metadata.quantization or fallback_quant,
        "architecture": metadata.architecture,
        "parameter_size": metadata.parameter_size,
        "context_length": metadata.context_length,
    }


@functools.cache
def _cpu_count() -> int:
    """Physical cores this process may use (llama.cpp gains nothing from hyper-threads).

    Read once: ``status`` shows it, and the sysfs reads were a third of its time."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def _load_failure(exc: Exception, errors: list[str]) -> str:
    """Why llama.cpp could not load a model: the reason it logged, else the exception."""
    marker = "error loading model: "
    reasons = [line.split(marker, 1)[1] for line in errors if marker in line]
    if not reasons:
        return str(exc)
    reason = f"llama.cpp: {reasons[0]}"
    if "unknown model architecture" in reasons[0]:
        from llama_cpp import __version__

        reason += f" (llama-cpp-python {__version__} does not support it; a newer one may)"
    return reason
