"""Configuration: a TOML file, found by ``--config``, ``LLMSPELL_CONFIG`` or the user config dir.

Works with no file at all. ``${VAR}`` in strings is expanded from the environment (an unset
variable is an error). Unknown keys and wrong types are :class:`ConfigError` naming the key and
the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from platformdirs import user_config_path, user_data_path
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .spec import BACKENDS, normalize_backend

CONFIG_ENV = "LLMSPELL_CONFIG"
MODELS_ENV = "LLMSPELL_MODELS"
OLLAMA_HOST_ENV = "OLLAMA_HOST"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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


class LlamaCppConfig(_Strict):
    enabled: bool = True
    timeout_seconds: float = Field(default=600.0, gt=0)
    options: LlamaCppOptions = LlamaCppOptions()


class ProvidersConfig(_Strict):
    ollama: OllamaConfig = OllamaConfig()
    llamacpp: LlamaCppConfig = LlamaCppConfig()


class Config(_Strict):
    default_backend: str | None = None
    providers: ProvidersConfig = ProvidersConfig()
    source: Path | None = Field(default=None, exclude=True)
    """The file this came from, None for defaults."""

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
        expanded = _expand(data, where, ())
        try:
            config = cls.model_validate({**expanded, "source": source})
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            if first["type"] == "extra_forbidden":
                message = f"{where}: unknown key '{key}'"
            else:
                message = f"{where}: invalid value for '{key}': {first['msg']}"
            raise ConfigError(message, key=key, path=str(source) if source else None) from exc
        if config.default_backend is not None:
            try:
                backend = normalize_backend(config.default_backend)
            except Exception as exc:
                raise ConfigError(
                    f"{where}: invalid value for 'default_backend': {config.default_backend!r}"
                    f" (expected one of {', '.join(BACKENDS)})",
                    key="default_backend",
                    path=str(source) if source else None,
                ) from exc
            config = config.model_copy(update={"default_backend": backend})
        return config

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
