"""A stand-in Ollama server for the tests: real HTTP on 127.0.0.1, Ollama's documented shapes.

Endpoints (docs/api.md of ollama/ollama): ``GET /api/version``, ``GET /api/tags``,
``POST /api/show``, ``POST /api/pull`` (NDJSON progress), ``DELETE /api/delete``,
``GET /api/ps``, ``POST /api/generate`` and ``POST /api/chat`` (NDJSON streams, or one object
with ``"stream": false``; an empty prompt / no messages loads the model, ``keep_alive: 0``
unloads it with ``done_reason: "unload"``). Errors are ``{"error": "..."}`` bodies with
Ollama's status codes, or an ``error`` line inside a 200 stream (a pull of an unknown model).

Generation is real by default: every installed model is served by the Gemma 3 270M GGUF through
llama-cpp-python (:class:`GemmaRunner`, loaded lazily once, used under a lock), with real token
counts and nanosecond durations. Tests about the wire protocol alone (faults, timeouts) use
:class:`ScriptedRunner` instead: the same shapes at once, whatever else the machine is doing.

Faults (:class:`Fault`), switchable per test: ``slow`` (sleep before answering), ``error_500``,
``midstream_error`` (an ``error`` line after some lines), ``truncated`` (the connection is
dropped mid-stream), ``incomplete`` (the stream ends cleanly without its final line),
``malformed`` (a line that is not JSON). "Down" is :func:`tests.isolation.closed_port_url` or a
stopped server.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from providers.llamacpp.native import prepare_llama_cpp

Json = dict[str, Any]

STREAM_FAULTS = ("midstream_error", "truncated", "incomplete", "malformed")
FAULT_KINDS = ("slow", "error_500", *STREAM_FAULTS)
DEFAULT_NUM_PREDICT = 64
"""The stand-in caps generation (Ollama's default is unlimited) so that no test runs long."""
STANDIN_VERSION = "0.12.6"
# Timestamps are written with a non-UTC offset, as a real Ollama in another time zone does.
_LOCAL = timezone(timedelta(hours=2))


def _timestamp(moment: datetime | None = None) -> str:
    moment = (moment or datetime.now(UTC)).astimezone(_LOCAL)
    # Ollama writes nanoseconds; Python gives microseconds: pad to nine digits.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123" + moment.strftime("%z")[:3] + ":00"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's ``keep_alive`` (seconds, or ``"5m"``/``"30s"``/``"1h"``) in seconds.

    None means "forever" (a negative value); 0 means "unload now".
    """
    if value is None:
        return 300.0
    if isinstance(value, int | float):
        return None if value < 0 else float(value)
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?", str(value).strip())
    if not match:
        raise ValueError(f"invalid keep_alive {value!r}")
    amount = float(match.group(1))
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[match.group(2)]
    return None if amount < 0 else amount * scale


@dataclass
class StandinModel:
    """One model as the stand-in describes it (tags, show and ps)."""

    name: str
    size: int
    family: str = "gemma3"
    parameter_size: str = "268.10M"
    quantization: str = "Q4_K_M"
    context_length: int = 32768
    parameter_count: int = 268_098_176
    template: str = (
        '{{- range .Messages }}<start_of_turn>{{ if eq .Role "user" }}user{{ else }}model'
        "{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n"
    )
    parameters: str = 'stop "<end_of_turn>"\ntemperature 1\ntop_k 64\ntop_p 0.95'
    capabilities: tuple[str, ...] = ("completion",)
    layers: tuple[int, ...] = ()
    """Layer sizes served by a pull (bytes)."""
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def digest(self) -> str:
        return _digest(self.name)

    def details(self) -> Json:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def tag(self) -> Json:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": _timestamp(self.modified),
            "size": self.size,
            "digest": self.digest.removeprefix("sha256:"),
            "details": self.details(),
        }


@dataclass
class Fault:
    """A fault to inject. ``path`` limits it to one endpoint (None: every endpoint)."""

    kind: str
    path: str | None = None
    after_lines: int = 2
    """Stream faults strike after this many good lines."""
    delay: float = 3.0
    """``slow``: seconds to wait before answering (ends early when the server stops)."""
    message: str = "llama runner process has terminated: exit status 2"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}: expected one of {FAULT_KINDS}")


class Runner(Protocol):
    """What serves the stand-in's generations."""

    def load(self) -> int:
        """Load the model if needed; returns the nanoseconds spent loading."""
        ...

    def chat_prompt(self, messages: list[Json]) -> str: ...

    def generate(
        self, prompt: str, options: Json, emit: Callable[[str], None], output: Any = None
    ) -> Json:
        """Generate from ``prompt`` calling ``emit`` per piece; returns Ollama's final stats.
        ``output`` is the request's ``format`` (``"json"`` or a JSON Schema), if any."""
        ...

    def embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int, int]:
        """Normalized vectors of ``texts``, their token count and the load's nanoseconds;
        :class:`EmbedTooLong` for an input longer than the context without ``truncate``."""
        ...


EMBED_CONTEXT = 512
"""The stand-in's embedding context (tokens); a longer input is cut, or refused."""


class EmbedTooLong(Exception):
    """An input longer than the embedding context, with ``truncate`` false."""


def _unit(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm else vector


class ScriptedRunner:
    """Generation without a model: the words of :attr:`ANSWER`, one piece each, honouring
    ``num_predict`` and ``stop``. For tests of the protocol, so that no answer waits for a CPU
    that other jobs keep busy."""

    ANSWER = "Blue is the colour of the clear sky at noon, and of the deep sea far from land."

    def load(self) -> int:
        return 0

    def chat_prompt(self, messages: list[Json]) -> str:
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in messages)

    def generate(
        self, prompt: str, options: Json, emit: Callable[[str], None], output: Any = None
    ) -> Json:
        """``output`` is ignored: the answer is :attr:`ANSWER` (prose, never JSON), as an
        unconstrained model's may be."""
        started = time.perf_counter_ns()
        limit = int(options.get("num_predict") or DEFAULT_NUM_PREDICT)
        limit = DEFAULT_NUM_PREDICT if limit < 0 else limit
        stops = [s for s in options.get("stop") or [] if s]
        words = self.ANSWER.split(" ")
        text, count, reason = "", 0, "stop"
        for index, word in enumerate(words):
            if count >= limit:
                reason = "length"
                break
            piece = word if index == 0 else " " + word
            hit = next((s for s in stops if s in text + piece), None)
            if hit is not None:
                piece = (text + piece).split(hit, 1)[0][len(text) :]
            if piece:
                text += piece
                emit(piece)
            count += 1
            if hit is not None:
                break
        end = time.perf_counter_ns()
        return {
            "done_reason": reason,
            "total_duration": end - started,
            "load_duration": 0,
            "prompt_eval_count": len(prompt.split()),
            "prompt_eval_duration": 0,
            "eval_count": count,
            "eval_duration": end - started,
        }

    def embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int, int]:
        """Eight numbers from each text's sha256 (a word is a token), normalized."""
        vectors, tokens = [], 0
        for text in texts:
            words = len(text.split())
            if words > EMBED_CONTEXT and not truncate:
                raise EmbedTooLong
            tokens += min(words, EMBED_CONTEXT)
            digest = hashlib.sha256(text.encode()).digest()
            vectors.append(_unit([b - 127.5 for b in digest[:8]]))
        return vectors, tokens, 0


class GemmaRunner:
    """Real generation with the Gemma 3 270M GGUF; loaded on first use, one request at a time."""

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self._lock = threading.Lock()
        self._llm: Any = None
        self._embedder: Any = None

    def _ensure_loaded(self) -> int:
        """Load the model if needed (lock held); returns the nanoseconds spent loading."""
        if self._llm is not None:
            return 0
        import llama_cpp

        # Routes llama.cpp's native log to logging, and turns off the AMX weight repacking that
        # crashes on this machine's CPU (see providers/llamacpp/native.py).
        prepare_llama_cpp()
        started = time.perf_counter_ns()
        self._llm = llama_cpp.Llama(
            model_path=str(self.model_path),
            chat_format="gemma",
            n_ctx=2048,
            n_threads=2,
            verbose=False,
        )
        return time.perf_counter_ns() - started

    def load(self) -> int:
        with self._lock:
            return self._ensure_loaded()

    def embed(self, texts: list[str], truncate: bool) -> tuple[list[list[float]], int, int]:
        """Mean-pooled, normalized vectors of raw llama-cpp-python (its own embedding model,
        loaded on first use), one text at a time as Ollama's runner evaluates them."""
        with self._lock:
            load_ns = 0
            if self._embedder is None:
                import llama_cpp

                prepare_llama_cpp()
                started = time.perf_counter_ns()
                self._embedder = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_ctx=EMBED_CONTEXT,
                    n_batch=EMBED_CONTEXT,
                    n_ubatch=EMBED_CONTEXT,
                    n_threads=2,
                    verbose=False,
                )
                load_ns = time.perf_counter_ns() - started
            llm = self._embedder
            vectors, tokens = [], 0
            for text in texts:
                count = len(llm.tokenize(text.encode("utf-8")))
                if count > EMBED_CONTEXT and not truncate:
                    raise EmbedTooLong
                tokens += min(count, EMBED_CONTEXT)
                vectors.append(llm.embed(text, normalize=True, truncate=True))
            return vectors, tokens, load_ns

    def chat_prompt(self, messages: list[Json]) -> str:
        from llama_cpp.llama_chat_format import format_gemma

        return str(format_gemma(messages=messages).prompt)

    def generate(
        self, prompt: str, options: Json, emit: Callable[[str], None], output: Any = None
    ) -> Json:
        """Generate from ``prompt`` calling ``emit`` per piece; returns Ollama's final stats.
        A ``format`` (``output``) constrains the answer as Ollama's grammar does (here with
        llmspell's own llguidance constraint)."""
        with self._lock:
            started = time.perf_counter_ns()
            load_ns = self._ensure_loaded()
            llm = self._llm
            begin = time.perf_counter_ns()
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            if options.get("seed") is not None:
                llm.set_seed(int(options["seed"]))
            stop_ids = {
                llm.token_eos(),
                *llm.tokenize(b"<end_of_turn>", add_bos=False, special=True),
            }
            stops = [s for s in options.get("stop") or [] if s]
            limit = int(options.get("num_predict") or DEFAULT_NUM_PREDICT)
            if limit < 0:
                limit = DEFAULT_NUM_PREDICT
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text, count, first_ns, reason = "", 0, None, "length"
            processors = None
            if output is not None:
                from llama_cpp import LogitsProcessorList

                from providers.llamacpp.grammar import Constraint

                processors = LogitsProcessorList([Constraint("standin", llm, output, len(tokens))])
            generator = llm.generate(
                tokens,
                temp=float(options.get("temperature", 0.8)),
                top_k=int(options.get("top_k", 40)),
                top_p=float(options.get("top_p", 0.9)),
                min_p=float(options.get("min_p", 0.0)),
                repeat_penalty=float(options.get("repeat_penalty", 1.1)),
                reset=True,
                logits_processor=processors,
            )
            try:
                for token in generator:
                    if first_ns is None:
                        first_ns = time.perf_counter_ns()
                    if token in stop_ids:
                        reason = "stop"
                        break
                    count += 1
                    piece = decoder.decode(llm.detokenize([token]))
                    hit = next((s for s in stops if s in text + piece), None)
                    if hit is not None:
                        piece = (text + piece).split(hit, 1)[0][len(text) :]
                        reason = "stop"
                    if piece:
                        text += piece
                        emit(piece)
                    if reason == "stop" or count >= limit:
                        break
            finally:
                generator.close()
            end = time.perf_counter_ns()
            first_ns = first_ns or end
            return {
                "done_reason": reason,
                "total_duration": end - started,
                "load_duration": load_ns,
                "prompt_eval_count": len(tokens),
                "prompt_eval_duration": first_ns - begin,
                "eval_count": count,
                "eval_duration": end - first_ns,
            }


class _Abort(Exception):
    """Raised inside a handler once a fault has been acted out."""


class OllamaStandin:
    """The stand-in server: ``start()`` binds 127.0.0.1 on a free port, ``stop()`` ends it."""

    def __init__(self, runner: Runner | None, model_size: int = 253_000_000) -> None:
        self.runner = runner
        self.fault: Fault | None = None
        self.requests: list[tuple[str, str, Json]] = []
        """Every request received: (method, path, JSON body)."""
        self.abandoned: list[str] = []
        """Paths of requests whose client went away before the answer was sent."""
        self.client_left = threading.Event()
        self.finals: list[Json] = []
        """The final (``done: true``) object of every generation, as sent."""
        self.installed: dict[str, StandinModel] = {}
        self.registry: dict[str, StandinModel] = {}
        self.loaded: dict[str, float | None] = {}
        """Loaded model name → expiry (epoch seconds, None = never)."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        for model in (
            StandinModel("gemma3:270m", model_size),
            StandinModel("hf.co/unsloth/gemma-3-270m-it-GGUF:Q4_K_M", model_size),
        ):
            self.installed[model.name] = model
        self.registry["smollm2:135m"] = StandinModel(
            "smollm2:135m",
            270_898_672,
            family="llama",
            parameter_size="134.52M",
            quantization="Q8_0",
            context_length=8192,
            parameter_count=134_515_008,
            layers=(270_896_000, 1_700, 972),
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.connections: set[socket.socket] = set()
        """Open client connections, closed by ``stop()`` as a dying server's would be."""

    @property
    def url(self) -> str:
        assert self._server is not None, "the stand-in is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        assert self._server is not None, "the stand-in is not running"
        return int(self._server.server_address[1])

    def start(self, port: int = 0) -> OllamaStandin:
        """Serve on ``port`` (0: a free one; a stopped stand-in's port: "Ollama is back")."""
        handler = type("Handler", (_Handler,), {"standin": self})
        self.stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (later connections are refused)."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self.lock:
            connections, self.connections = list(self.connections), set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
        if self._thread is not None:
            self._thread.join(timeout=5)

    def bodies(self, path: str) -> list[Json]:
        return [body for _, p, body in self.requests if p == path]

    def fault_for(self, path: str) -> Fault | None:
        fault = self.fault
        if fault is None or (fault.path is not None and fault.path != path):
            return None
        return fault


class _Handler(BaseHTTPRequestHandler):
    standin: OllamaStandin
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        with self.standin.lock:
            self.standin.connections.add(self.connection)

    def finish(self) -> None:
        with self.standin.lock:
            self.standin.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``standin.requests`` instead."""

    # Dispatch -----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._json(400, {"error": "invalid JSON body"})
            return
        standin = self.standin
        standin.requests.append((method, path, body))
        routes: dict[tuple[str, str], Callable[[Json], None]] = {
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/pull"): self._pull,
            ("DELETE", "/api/delete"): self._delete,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/generate"): self._generate,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/embed"): self._embed,
        }
        route = routes.get((method, path))
        if route is None:
            self._json(404, {"error": f"no route {method} {path}"})
            return
        fault = standin.fault_for(path)
        if fault is not None and fault.kind == "slow":
            standin.stopping.wait(fault.delay)
        if fault is not None and fault.kind == "error_500":
            self._json(500, {"error": fault.message})
            return
        self._fault = fault if fault is not None and fault.kind in STREAM_FAULTS else None
        self._lines = 0
        try:
            route(body)
        except _Abort:
            # Only a truncated stream loses its connection; the others ended their stream.
            self.close_connection = fault is not None and fault.kind == "truncated"
        except (BrokenPipeError, ConnectionResetError):
            # The client went away (a cancelled stream): stop generating, nothing more to send.
            self.close_connection = True
            with standin.lock:
                standin.abandoned.append(path)
            standin.client_left.set()

    # Responses ----------------------------------------------------------------------------------

    def _json(self, status: int, data: Json) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _empty(self, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _line(self, data: Json) -> None:
        """One NDJSON line, unless the current fault strikes first."""
        fault = self._fault
        if fault is not None and self._lines >= fault.after_lines:
            self._act_out(fault)
        self._chunk(json.dumps(data).encode() + b"\n")
        self._lines += 1

    def _act_out(self, fault: Fault) -> None:
        if fault.kind == "midstream_error":
            self._chunk(json.dumps({"error": fault.message}).encode() + b"\n")
            self._end_stream()
        elif fault.kind == "malformed":
            self._chunk(b'{"model": "gemma3:270m", "response": "cut\n')
            self._end_stream()
        elif fault.kind == "incomplete":
            self._end_stream()
        elif fault.kind == "truncated":
            # Drop the connection without the terminating chunk.
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Abort

    # Endpoints ---------------------------------------------------------------------------------

    def _version(self, body: Json) -> None:
        self._json(200, {"version": STANDIN_VERSION})

    def _tags(self, body: Json) -> None:
        with self.standin.lock:
            models = [m.tag() for m in self.standin.installed.values()]
        self._json(200, {"models": models})

    def _model(self, body: Json) -> StandinModel | None:
        name = str(body.get("model") or body.get("name") or "")
        if name and ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        return self.standin.installed.get(name)

    def _not_found(self, body: Json, suffix: str = "") -> None:
        name = body.get("model") or body.get("name")
        self._json(404, {"error": f"model '{name}' not found{suffix}"})

    def _show(self, body: Json) -> None:
        model = self._model(body)
        if model is None:
            self._not_found(body)
            return
        arch = model.family
        self._json(
            200,
            {
                "modelfile": f"FROM {model.name}\n",
                "parameters": model.parameters,
                "template": model.template,
                "details": model.details(),
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": model.parameter_count,
                    f"{arch}.context_length": model.context_length,
                    f"{arch}.embedding_length": 640,
                },
                "capabilities": list(model.capabilities),
                "modified_at": _timestamp(model.modified),
            },
        )

    def _pull(self, body: Json) -> None:
        name = str(body.get("model") or body.get("name") or "")
        if ":" not in name.rsplit("/", 1)[-1]:
            name += ":latest"
        standin = self.standin
        source = standin.registry.get(name) or standin.installed.get(name)
        stream = body.get("stream", True)
        if not stream:
            if source is None:
                self._json(500, {"error": "pull model manifest: file does not exist"})
                return
            with standin.lock:
                standin.installed[name] = source
            self._json(200, {"status": "success"})
            return
        self._start_stream()
        self._line({"status": "pulling manifest"})
        if source is None:
            self._line({"error": "pull model manifest: file does not exist"})
            self._end_stream()
            return
        for index, size in enumerate(source.layers or (source.size,)):
            digest = _digest(f"{name}/{index}")
            status = f"pulling {digest[7:19]}"
            # The first line of a layer has no "completed", as Ollama sends it.
            self._line({"status": status, "digest": digest, "total": size})
            for part in (1, 2, 3):
                self._line(
                    {
                        "status": status,
                        "digest": digest,
                        "total": size,
                        "completed": size * part // 3,
                    }
                )
        self._line({"status": "verifying sha256 digest"})
        self._line({"status": "writing manifest"})
        with standin.lock:
            standin.installed[name] = source
        self._line({"status": "success"})
        self._end_stream()

    def _delete(self, body: Json) -> None:
        model = self._model(body)
        if model is None:
            self._not_found(body)
            return
        with self.standin.lock:
            self.standin.installed.pop(model.name, None)
            self.standin.loaded.pop(model.name, None)
        self._empty()

    def _ps(self, body: Json) -> None:
        standin = self.standin
        now = time.time()
        models = []
        with standin.lock:
            for name, expires in list(standin.loaded.items()):
                if expires is not None and expires <= now:
                    del standin.loaded[name]
                    continue
                model = standin.installed[name]
                moment = (
                    datetime.fromtimestamp(expires, UTC)
                    if expires is not None
                    else datetime(2318, 1, 1, tzinfo=UTC)
                )
                entry = model.tag()
                del entry["modified_at"]
                models.append({**entry, "expires_at": _timestamp(moment), "size_vram": 0})
        self._json(200, {"models": models})

    # Generation --------------------------------------------------------------------------------

    def _generate(self, body: Json) -> None:
        self._generation(body, chat=False)

    def _chat(self, body: Json) -> None:
        self._generation(body, chat=True)

    def _generation(self, body: Json, *, chat: bool) -> None:
        standin = self.standin
        model = self._model(body)
        if model is None:
            self._not_found(body, ", try pulling it first")
            return
        try:
            keep = keep_alive_seconds(body.get("keep_alive"))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        empty = not body.get("messages") if chat else not body.get("prompt")
        base: Json = {"model": model.name, "created_at": _timestamp()}
        if empty:
            if keep == 0:
                with standin.lock:
                    standin.loaded.pop(model.name, None)
                reason = "unload"
            else:
                assert standin.runner is not None, "the stand-in has no model runner"
                standin.runner.load()
                with standin.lock:
                    standin.loaded[model.name] = None if keep is None else time.time() + keep
                reason = "load"
            reply = {**base, "done": True, "done_reason": reason}
            reply.update(
                {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            )
            self._json(200, reply)
            return
        runner = standin.runner
        assert runner is not None, "the stand-in has no model runner"
        options = body.get("options") or {}
        if chat:
            prompt = runner.chat_prompt(body["messages"])
        elif body.get("raw"):
            prompt = str(body["prompt"])
        else:  # as Ollama does: the prompt is one user turn of the model's template
            prompt = runner.chat_prompt([{"role": "user", "content": str(body["prompt"])}])

        def piece_line(text: str) -> Json:
            content = (
                {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
            )
            return {**base, "created_at": _timestamp(), **content, "done": False}

        if body.get("stream", True):
            self._start_stream()
            stats = runner.generate(
                prompt, options, lambda text: self._line(piece_line(text)), body.get("format")
            )
            final = {**piece_line(""), "done": True, **stats}
            self._settle(model.name, keep, final)
            self._line(final)
            self._end_stream()
        else:
            pieces: list[str] = []
            stats = runner.generate(prompt, options, pieces.append, body.get("format"))
            final = {**piece_line("".join(pieces)), "done": True, **stats}
            self._settle(model.name, keep, final)
            self._json(200, final)

    # Embeddings --------------------------------------------------------------------------------

    def _embed(self, body: Json) -> None:
        """``POST /api/embed``: ``input`` a string or a list of them → ``embeddings`` (one
        normalized vector each), ``total_duration``, ``load_duration``, ``prompt_eval_count``;
        an input longer than the context with ``truncate: false`` is a 400, an unknown model
        a 404 ``model "x" not found, try pulling it first``."""
        standin = self.standin
        model = self._model(body)
        if model is None:
            name = body.get("model")
            self._json(404, {"error": f'model "{name}" not found, try pulling it first'})
            return
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self._json(400, {"error": "invalid input type"})
            return
        if not texts or any(not t for t in texts):
            self._json(400, {"error": "input is empty"})  # as Ollama refuses ""
            return
        runner = standin.runner
        assert runner is not None, "the stand-in has no model runner"
        started = time.perf_counter_ns()
        try:
            vectors, tokens, load_ns = runner.embed(texts, bool(body.get("truncate", True)))
        except EmbedTooLong:
            self._json(400, {"error": "the input length exceeds the context length"})
            return
        with standin.lock:
            standin.loaded[model.name] = time.time() + (keep_alive_seconds(None) or 0)
        self._json(
            200,
            {
                "model": model.name,
                "embeddings": vectors,
                "total_duration": time.perf_counter_ns() - started,
                "load_duration": load_ns,
                "prompt_eval_count": tokens,
            },
        )

    def _settle(self, name: str, keep: float | None, final: Json) -> None:
        """Record a finished generation (before it is sent, so tests see it once answered)."""
        standin = self.standin
        with standin.lock:
            standin.finals.append(final)
            if keep == 0:
                standin.loaded.pop(name, None)
            else:
                standin.loaded[name] = None if keep is None else time.time() + keep
