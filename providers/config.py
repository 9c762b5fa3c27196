"""Configuration: a TOML file, found by ``--config``, ``LLMSPELL_CONFIG`` or the user config dir.

Works with no file at all. ``${VAR}`` in strings is expanded from the environment (an unset
variable is an error). Unknown keys and wrong types are :class:`ConfigError` naming the key and
the file.

Besides the built-in ``[providers.ollama]`` and ``[providers.llamacpp]``, any number of named
endpoints: ``[providers.NAME]`` tables with a ``type`` (``openai``: an OpenAI-compatible server;
``ollama``: one more Ollama). ``NAME`` is the backend's name in specs (``model@NAME``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from platformdirs import user_config_path, user_data_path
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, LLMSpellError
from .options import OPTION_NAMES, GenerationOptions
from .spec import BACKEND_ALIASES, BACKENDS, ModelSpec, normalize_backend

CONFIG_ENV = "LLMSPELL_CONFIG"
MODEL_ENV = "LLMSPELL_MODEL"
"""The model used where none is named (wins over ``default_model`` in the config)."""
MODELS_ENV = "LLMSPELL_MODELS"
OLLAMA_HOST_ENV = "OLLAMA_HOST"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_STALL_SECONDS = 10.0

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENDPOINT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class OllamaOptions(_Strict):
    keep_alive: str | int | None = None
    """Passed to Ollama as ``keep_alive`` (e.g. ``"5m"`` or seconds); None = Ollama's default."""


class OllamaConfig(_Strict):
    enabled: bool = True
    base_url: str | None = None
    timeout_seconds: float = Field(default=120.0, gt=0)
    options: OllamaOptions = OllamaOptions()


class LlamaCppOptions(_Strict):
    model_directory: Path | None = None
    n_ctx: int = Field(default=4096, ge=0)
    n_threads: int = Field(default=0, ge=0)
    """0 = automatic (the number of physical cores)."""
    n_gpu_layers: int = -1
    max_loaded_models: int = Field(default=2, ge=1)
    keep_alive: float = Field(default=300.0, ge=0)
    """Seconds an idle model stays loaded; 0 = until evicted or unloaded."""
    stall_seconds: float = Field(default=DEFAULT_STALL_SECONDS, ge=0)
    """A generation whose reader stopped reading (a half-read stream) loses the model after
    this many seconds when another request waits for it; 0 = never."""
    reproducible: bool = False
    """Greedy output the same on a warm model as on a cold one: evaluated tokens are reused
    only in whole batches of 64 (a turn then re-evaluates up to 63 tokens of its history, and
    a conversation's turns take about twice as long to start). Off: every evaluated token is
    reused, as llama-cpp-python and Ollama do, and greedy text may differ in rare tokens
    between a cold and a warm model (llama.cpp's results depend on how tokens are batched)."""
    conversation_cache_bytes: int = Field(default=256 * 2**20, ge=0)
    """Memory per loaded model for the evaluated state of recent conversations, so that a
    turn evaluates only its new tokens; least recently used first out; 0 = none."""
    max_context: int = Field(default=0, ge=0)
    """The largest ``num_ctx`` a request may ask for (besides the model's trained context
    length, which is always a bound); 0 = no other bound."""
    load_timeout: float = Field(default=600.0, gt=0)
    """Seconds a model load may take before its runner is stopped."""
    render_timeout: float = Field(default=60.0, gt=0)
    """Seconds a prompt's chat-template render and tokenization may take before the model's
    runner is stopped (a template is code from the model file)."""
    check_imports: bool = True
    """Load an imported file once in a runner before it is added to the store, so that a
    file llama.cpp cannot load is refused at import."""


class LlamaCppConfig(_Strict):
    enabled: bool = True
    timeout_seconds: float = Field(default=600.0, gt=0)
    options: LlamaCppOptions = LlamaCppOptions()


class LogsConfig(_Strict):
    enabled: bool = True
    """Keep every prompt, chat turn and Agent turn in the conversation log."""
    path: Path | None = None
    """The log database; default: ``logs.db`` in the user data directory."""


class ProvidersConfig(_Strict):
    ollama: OllamaConfig = OllamaConfig()
    llamacpp: LlamaCppConfig = LlamaCppConfig()


def http_url(value: str, *, default_path: str = "") -> str:
    """``value`` as an ``http(s)://host[:port][/path]`` URL without a trailing slash
    (``default_path`` when it has no path); :class:`ValueError` saying what is wrong."""
    text = value.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the URL must not hold a user name or password (a key goes in the environment "
            "variable that api_key_env names)"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: the URL must not have a query or a fragment")
    return text + default_path if not parts.path and default_path else text


class OpenAIEndpoint(_Strict):
    """``[providers.NAME]`` with ``type = "openai"``: an OpenAI-compatible server (vLLM,
    llama.cpp's llama-server, SGLang, TGI, LM Studio...)."""

    type: Literal["openai"] = "openai"
    enabled: bool = True
    base_url: str
    """The API root, e.g. ``http://gpu-box:8000/v1`` (a URL without a path gets ``/v1``)."""
    api_key_env: str | None = None
    """The environment variable holding the API key; the key itself is never in the config."""
    timeout_seconds: float = Field(default=120.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return http_url(value, default_path="/v1")

    @field_validator("api_key_env")
    @classmethod
    def _api_key_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not the name of an environment variable (the key itself goes "
                "in that variable, never in the config)"
            )
        return value


class OllamaEndpoint(OllamaConfig):
    """``[providers.NAME]`` with ``type = "ollama"``: one more Ollama server."""

    type: Literal["ollama"] = "ollama"
    base_url: str
    """Required here (``OLLAMA_HOST`` is for ``[providers.ollama]``); the same forms."""

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return http_url(normalize_ollama_url(value))


Endpoint = OpenAIEndpoint | OllamaEndpoint
ENDPOINT_TYPES: dict[str, type[OpenAIEndpoint] | type[OllamaEndpoint]] = {
    "openai": OpenAIEndpoint,
    "ollama": OllamaEndpoint,
}


class Config(_Strict):
    default_backend: str | None = None
    default_model: str | None = None
    """The model of ``prompt``, ``chat``, ``Agent()`` and ``%llm`` when none is named
    (``$LLMSPELL_MODEL`` wins; see :meth:`model_default`)."""
    providers: ProvidersConfig = ProvidersConfig()
    logs: LogsConfig = LogsConfig()
    generation: GenerationOptions = Field(default_factory=GenerationOptions)
    """``[generation]``: default options of every generation on every backend; a request's
    own options win (see :func:`providers.options.with_defaults`)."""
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    """The named endpoints (``[providers.NAME]`` with a ``type``), in the file's order."""
    source: Path | None = Field(default=None, exclude=True)
    """The file this came from, None for defaults."""

    @field_validator("default_model")
    @classmethod
    def _default_model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ModelSpec.parse(value))
        except LLMSpellError as exc:  # pydantic reports only ValueErrors as the key's error
            raise ValueError(str(exc)) from None

    def model_default(self) -> str | None:
        """The model to use when none is named: ``$LLMSPELL_MODEL``, else ``default_model``,
        else None."""
        return os.environ.get(MODEL_ENV, "").strip() or self.default_model

    @field_validator("generation", mode="before")
    @classmethod
    def _generation_keys(cls, value: Any) -> Any:
        unknown = sorted(set(value) - set(OPTION_NAMES)) if isinstance(value, dict) else []
        if unknown:  # pydantic's own message for a dataclass is "Unexpected keyword argument"
            raise ValueError(
                f"unknown option {unknown[0]!r} (expected one of {', '.join(OPTION_NAMES)})"
            )
        return value

    @classmethod
    def load(cls, path: str | Path | None = None) -> Config:
        """Load from ``path``, else ``$LLMSPELL_CONFIG``, else the user config file, else defaults.

        An explicitly named file (argument or environment) must exist.
        """
        explicit = path if path is not None else os.environ.get(CONFIG_ENV) or None
        if explicit is not None:
            file = Path(explicit).expanduser()
            if not file.is_file():
                raise ConfigError(f"config file not found: {file}", path=str(file))
            return cls.from_file(file)
        default = default_config_path()
        return cls.from_file(default) if default.is_file() else cls()

    @classmethod
    def from_file(cls, file: Path) -> Config:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}", path=str(file)) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read: {exc}", path=str(file)) from exc
        return cls.from_dict(data, source=file)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: Path | None = None) -> Config:
        where = str(source) if source else "configuration"
        path = str(source) if source else None
        expanded = _expand(data, where, ())
        if "endpoints" in expanded:  # filled from the [providers.NAME] tables only
            raise ConfigError(f"{where}: unknown key 'endpoints'", key="endpoints", path=path)
        builtin, named = _split_providers(expanded.get("providers"), where, path)
        if builtin is not None:
            expanded = {**expanded, "providers": builtin}
        try:
            config = cls.model_validate({**expanded, "source": source})
        except ValidationError as exc:
            raise _validation_error(exc, where, path, ()) from exc
        endpoints = {name: _endpoint(name, table, where, path) for name, table in named.items()}
        config = config.model_copy(update={"endpoints": endpoints})
        if config.default_backend is not None:
            known = config.backend_names()
            try:
                backend = normalize_backend(config.default_backend)
            except Exception:
                backend = None
            if backend not in known:
                raise ConfigError(
                    f"{where}: invalid value for 'default_backend': {config.default_backend!r}"
                    f" (expected one of {', '.join(known)}, or the alias 'candle')",
                    key="default_backend",
                    path=path,
                )
            config = config.model_copy(update={"default_backend": backend})
        return config

    def backend_names(self) -> tuple[str, ...]:
        """Every backend this configuration knows, enabled or not: the built-in ones, then the
        named endpoints in the file's order."""
        return (*BACKENDS, *self.endpoints)

    # Derived values -------------------------------------------------------------------------

    def model_directory(self) -> Path:
        """Where llamacpp models live: config, else ``$LLMSPELL_MODELS``, else the data dir."""
        configured = self.providers.llamacpp.options.model_directory
        if configured is not None:
            return configured.expanduser()
        env = os.environ.get(MODELS_ENV)
        if env:
            return Path(env).expanduser()
        return user_data_path("llmspell") / "models"

    def ollama_url(self) -> str:
        """Ollama's base URL: config, else ``$OLLAMA_HOST`` (scheme and port optional)."""
        configured = self.providers.ollama.base_url
        if configured:
            return normalize_ollama_url(configured)
        env = os.environ.get(OLLAMA_HOST_ENV)
        if env:
            return normalize_ollama_url(env)
        return DEFAULT_OLLAMA_URL


def default_config_path() -> Path:
    return user_config_path("llmspell") / "config.toml"


def _split_providers(
    providers: Any, where: str, path: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``[providers]`` split into the built-in tables and the named endpoints' tables."""
    if not isinstance(providers, dict):
        return None, {}  # not a table: the model's validation says so
    builtin: dict[str, Any] = {}
    named: dict[str, Any] = {}
    for name, table in providers.items():
        if name in BACKENDS:
            if isinstance(table, dict) and "type" in table:
                implied = "ollama" if name == "ollama" else None
                if table["type"] != implied:
                    raise ConfigError(
                        f"{where}: [providers.{name}] is the built-in {name} backend"
                        + (
                            f" (its type is implied; 'type' may only be {implied!r})"
                            if implied
                            else " and takes no 'type'"
                        )
                        + ": give a named endpoint another name, e.g. [providers.remote]",
                        key=f"providers.{name}.type",
                        path=path,
                    )
                table = {k: v for k, v in table.items() if k != "type"}
            builtin[name] = table
        else:
            named[name] = table
    return builtin, named


def _endpoint(name: str, table: Any, where: str, path: str | None) -> Endpoint:
    """One ``[providers.NAME]`` table as its endpoint type; :class:`ConfigError` naming the
    table and the file for anything wrong with it."""
    key = f"providers.{name}"

    def error(problem: str, at: str = key) -> ConfigError:
        return ConfigError(f"{where}: [{key}]: {problem}", key=at, path=path)

    if name in BACKEND_ALIASES:
        raise error(
            f"{name!r} is an alias of the built-in {BACKEND_ALIASES[name]} backend: give the "
            "endpoint another name"
        )
    if not _ENDPOINT_NAME.fullmatch(name):
        raise error(
            f"invalid endpoint name {name!r} (lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit)"
        )
    if not isinstance(table, dict):
        raise error(f"must be a table, not {type(table).__name__}")
    kind = table.get("type")
    if kind is None:
        raise error(
            f"a named endpoint needs a type: one of {', '.join(ENDPOINT_TYPES)}"
            f" (built-in tables are {', '.join(BACKENDS)})",
            f"{key}.type",
        )
    model = ENDPOINT_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise error(
            f"unknown type {kind!r} (expected one of {', '.join(ENDPOINT_TYPES)})", f"{key}.type"
        )
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        raise _validation_error(exc, where, path, ("providers", name)) from exc


def _validation_error(
    exc: ValidationError, where: str, path: str | None, prefix: tuple[str, ...]
) -> ConfigError:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in (*prefix, *first["loc"]))
    if first["type"] == "extra_forbidden":
        message = f"{where}: unknown key '{key}'"
    else:
        detail = str(first["msg"]).removeprefix("Value error, ")
        message = f"{where}: invalid value for '{key}': {detail}"
    return ConfigError(message, key=key, path=path)


def normalize_ollama_url(value: str) -> str:
    """``127.0.0.1`` → ``http://127.0.0.1:11434``; ``0.0.0.0`` means "this host" to a client."""
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    scheme, _, rest = text.partition("://")
    host, slash, path = rest.partition("/")
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host[len("0.0.0.0") :]
    has_port = host.rsplit("]", 1)[-1].count(":") == 1 if host.startswith("[") else ":" in host
    if not has_port:
        host = f"{host}:{11434 if scheme == 'http' else 443}"
    return f"{scheme}://{host}{slash}{path}".rstrip("/")


def _expand(value: Any, where: str, key: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, where, (*key, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where, key) for v in value]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                dotted = ".".join(key)
                raise ConfigError(
                    f"{where}: '{dotted}' uses ${{{name}}}, which is not set",
                    key=dotted,
                    path=where,
                )
            return os.environ[name]

        return _VAR.sub(substitute, value)
    return value
