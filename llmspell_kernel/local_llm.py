"""``LocalLLM``: model management from notebook cells and scripts run in the llmspell kernel.

It runs the kernel's own command handlers in-process (the code runs inside the kernel, with its
:class:`~providers.ProviderManager`), validating its arguments with the protocol's request
models, and returns the JSON shapes of the protocol replies as lists and dicts that render as
tables in Jupyter (:mod:`.views`); pulls and loads show their progress (:mod:`.progress_view`)
and return a one-line summary.
"""

from __future__ import annotations

import builtins
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from providers import InvalidRequest, Message, ProviderManager, parse_spec
from providers.options import generation_options
from providers.types import ProgressCallback

from .commands import run_local
from .progress_view import format_seconds, progress_view
from .protocol.requests import (
    AvailableRequest,
    EmbedRequest,
    GenerateRequest,
    ImportRequest,
    InfoRequest,
    ListRequest,
    LoadRequest,
    PsRequest,
    PullRequest,
    RemoveRequest,
    Request,
    StatusRequest,
    UnloadRequest,
    validate,
)
from .protocol.results import Result
from .schemas import output_format, read_answer
from .views import KeyedTable, Record, Summary, Table, format_bytes

R = TypeVar("R", bound=Request)

NO_MODEL_HINT = "pass model=... or LocalLLM.set_default_model(...)"

Row = dict[str, Any]


class LocalLLM:
    """Local models: ``status()``, ``list()``, ``available()``, ``pull(spec)``, ``info(spec)``,
    ``remove(spec)``, ``load(spec)``, ``unload(spec)``, ``ps()``, ``import_model(path)`` and the
    default model used by ``Agent()`` and ``%llm`` (``set_default_model`` or ``$LLMSPELL_MODEL``).
    """

    def __init__(self, manager: ProviderManager) -> None:
        self._manager = manager
        self._default: str | None = None

    def __repr__(self) -> str:
        backends = ", ".join(self._manager.enabled()) or "none enabled"
        return (
            f"<LocalLLM: local models through llmspell (backends: {backends}; default model: "
            f"{self.default_model or 'not set'}). Try LocalLLM.status(), LocalLLM.list(), "
            "LocalLLM.pull(spec)>"
        )

    @property
    def manager(self) -> ProviderManager:
        """The kernel's provider manager (for what this object does not wrap)."""
        return self._manager

    # The default model ------------------------------------------------------------------------

    @property
    def default_model(self) -> str | None:
        """The model ``Agent()`` and ``%llm`` use when none is named: the one set with
        :meth:`set_default_model`, else ``$LLMSPELL_MODEL``, else the config's
        ``default_model``, else None."""
        if self._default is not None:
            return self._default
        return self._manager.config.model_default()

    def set_default_model(self, spec: str | None) -> None:
        """Use ``spec`` when no model is named; ``None`` goes back to ``$LLMSPELL_MODEL`` or
        the config's ``default_model``."""
        if spec is None:
            self._default = None
            return
        self._default = str(parse_spec(spec))

    def require_model(self, spec: str | None, hint: str) -> str:
        """``spec`` if given, else the default model, else :class:`InvalidRequest` with ``hint``."""
        chosen = spec if spec is not None else self.default_model
        if chosen is None:
            raise InvalidRequest(f"no model: {hint}")
        return str(parse_spec(chosen))

    # Commands: the kernel's own handlers, run in this process --------------------------------

    def run(
        self, model: type[R], fields: dict[str, Any], progress: ProgressCallback | None = None
    ) -> Result:
        """Validate ``fields`` as a ``model`` request and run it as the kernel would."""
        return run_local(self._manager, validate(model, fields), progress)

    # Queries ----------------------------------------------------------------------------------

    def status(self, backend: str | None = None) -> KeyedTable:
        """Each backend's health: ``{name: {available, version, models, loaded, reason}}``."""
        content = self.run(StatusRequest, {"backend": backend}).content()
        return KeyedTable(content["backends"], key="name", caption="backends")

    def list(self, backend: str | None = None) -> Table:
        """Installed models. A backend that cannot be reached is named on stderr, not hidden."""
        content = self.run(ListRequest, {"backend": backend}).content()
        for name, reason in content["errors"].items():
            print(f"note: backend {name} is unavailable: {reason}", file=sys.stderr)
        return Table(content["models"], caption="installed models")

    def available(self, backend: str | None = None, *, recommended: bool = False) -> Table:
        """Models that can be pulled."""
        fields = {"backend": backend, "recommended": recommended}
        return Table(self.run(AvailableRequest, fields).content()["models"], "models to pull")

    def info(self, spec: str) -> Record:
        return Record(self.run(InfoRequest, {"model": spec}).content()["model"])

    def ps(self) -> Table:
        """Models held in memory."""
        return Table(self.run(PsRequest, {}).content()["models"], caption="loaded models")

    # Structured output ------------------------------------------------------------------------

    def extract(self, text: str, schema: Any, model: str | None = None, **options: Any) -> Any:
        """What ``text`` asks of the model (e.g. "The people in this text: ..."), answered as
        JSON that satisfies ``schema`` (a JSON Schema dict, ``"json"``, or a pydantic model
        class) and returned parsed (an instance of the class for a pydantic model). ``options``
        are generation options (``temperature=0``, ``max_tokens``...)."""
        output, reader = output_format(schema, "LocalLLM.extract")
        checked = generation_options(options, what="LocalLLM.extract")
        fields = {
            "model": self.require_model(model, NO_MODEL_HINT),
            "messages": [Message("user", text)],
            "options": replace(checked, format=output),
        }
        result = self.run(GenerateRequest, fields)
        return read_answer(result.content()["text"], reader)

    # Changes ----------------------------------------------------------------------------------

    def pull(self, spec: str, force: bool = False, *, quantization: str | None = None) -> Summary:
        """Download a model, showing its progress (a live bar in notebooks, an updating line
        elsewhere), which ends as its summary line (``.line``); the result is the pull's reply
        (``result["model"]``...), shown as a few fields."""
        view = progress_view()
        fields = {"model": spec, "force": force, "quantization": quantization}
        summary = None
        try:
            content = self.run(PullRequest, fields, view).content()
            model = content["model"]
            shown = {
                "model": f"{model['id']}@{model['backend']}",
                "size": model.get("size_bytes"),
                "downloaded_bytes": content["bytes"],
                "resumed_bytes": content.get("resumed_bytes") or None,
                "seconds": round(content["seconds"], 1),
            }
            summary = Summary(content, pulled_line(content), shown)
            return summary
        finally:
            view.finish(None if summary is None else summary.line)

    def import_model(
        self, path: str | Path, name: str | None = None, *, link: bool = False
    ) -> Record:
        """Register a GGUF file that is already on disk (llamacpp): copied, or linked in
        place with ``link``."""
        fields = {"path": str(path), "name": name, "link": link}
        return Record(self.run(ImportRequest, fields).content()["model"])

    def remove(self, spec: str) -> Record:
        content = self.run(RemoveRequest, {"model": spec}).content()
        return Record({key: value for key, value in content.items() if value is not None})

    def load(self, spec: str) -> Summary:
        """Load a model into memory, showing that it loads, then its summary line (``.line``);
        the result is the loaded model's fields."""
        view = progress_view()
        started = time.monotonic()
        summary = None
        try:
            model = self.run(LoadRequest, {"model": spec}, view).content()["model"]
            line = f"loaded {model['id']}@{model['backend']} in "
            line += format_seconds(time.monotonic() - started)
            if model.get("size_bytes"):
                line += f" ({format_bytes(model['size_bytes'])} in memory)"
            summary = Summary(model, line, model)
            return summary
        finally:
            view.finish(None if summary is None else summary.line)

    def unload(self, spec: str) -> Record:
        return Record(self.run(UnloadRequest, {"model": spec}).content())

    # Embeddings -------------------------------------------------------------------------------

    def embed(
        self,
        texts: str | builtins.list[str],
        model: str | None = None,
        *,
        truncate: bool = True,
        normalize: bool = True,
    ) -> builtins.list[builtins.list[float]]:
        """Embedding vectors of ``texts``: one list of floats per text, in order (a single
        string gives a list holding one vector). ``model`` defaults to the default model;
        vectors have length 1 unless ``normalize=False``; ``truncate=False`` refuses a text
        longer than the model's embedding context instead of cutting it."""
        spec = self.require_model(model, "pass model=..., or LocalLLM.set_default_model(...)")
        fields = {"model": spec, "input": texts, "truncate": truncate, "normalize": normalize}
        result = self.run(EmbedRequest, fields).content()
        vectors: builtins.list[builtins.list[float]] = result["embeddings"]
        return vectors


def pulled_line(content: Row) -> str:
    """``pulled gemma3-270m@llamacpp: 253.1 MB in 4.2 s (12.0 MB/s)``, or that it was there."""
    model = content["model"]
    name = f"{model['id']}@{model['backend']}"
    got, seconds = content["bytes"], content["seconds"]
    if not got:
        return f"pulled {name}: already up to date ({format_seconds(seconds)})"
    line = f"pulled {name}: {format_bytes(got)} in {format_seconds(seconds)}"
    if seconds > 0:
        line += f" ({format_bytes(int(got / seconds))}/s)"
    if content.get("resumed_bytes"):
        line += f", resumed after {format_bytes(content['resumed_bytes'])}"
    return line
