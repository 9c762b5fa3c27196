"""Model specs: ``[provider/]model[:variant][@backend]`` and ``hf:ORG/REPO[:QUANT]``.

Parsing rules (SPEC §2):

- whitespace around the spec is trimmed;
- the backend is the text after the rightmost ``@``: a built-in backend (``llamacpp``,
  ``ollama``, or an alias of one) or the name of a configured endpoint (``[providers.NAME]``),
  which only the configuration can tell (the :class:`~providers.manager.ProviderManager` refuses
  names it does not know);
- the provider is everything before the last ``/`` of the rest;
- the variant is everything after the first ``:`` of the model part;
- ``hf:ORG/REPO[:QUANT]`` and ``hf.co/ORG/REPO[:QUANT]`` name a GGUF repository on the
  Hugging Face Hub, the quant picking the file.

Every part that may become a file name is checked: no control characters, no ``..``, no
absolute paths, no NUL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidModelSpec

BACKENDS: tuple[str, ...] = ("ollama", "llamacpp")
"""The built-in backends; configured endpoints add their own names."""
BACKEND_ALIASES: dict[str, str] = {
    "candle": "llamacpp",
    "llama.cpp": "llamacpp",
    "gguf": "llamacpp",
}
HF_PREFIXES: tuple[str, ...] = ("hf:", "hf.co/", "huggingface.co/")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_BACKEND = re.compile(r"[a-z0-9][a-z0-9_-]*")
_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SPEC_LENGTH = 512


def normalize_backend(name: str) -> str:
    """The canonical backend name for ``name``: lower case, aliases resolved (``candle`` →
    ``llamacpp``). Any well-formed name passes (it may be a configured endpoint's)."""
    key = name.strip().lower()
    key = BACKEND_ALIASES.get(key, key)
    if key not in BACKENDS and not _BACKEND.fullmatch(key):
        raise InvalidModelSpec(
            f"invalid backend name {name!r}: expected {', '.join(BACKENDS)} (or the alias "
            "'candle') or a configured endpoint's name (lower-case letters, digits, '-', '_')",
            backend=name,
        )
    return key


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``str(spec)`` gives back a spec that parses to the same value."""

    model: str
    variant: str | None = None
    provider: str | None = None
    backend: str | None = None
    hf_repo: str | None = None
    """``ORG/REPO`` when the spec names a Hugging Face repository (``hf:``)."""

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        if not isinstance(text, str):
            raise InvalidModelSpec(f"a model spec must be a string, not {type(text).__name__}")
        if len(text) > MAX_SPEC_LENGTH:
            raise InvalidModelSpec(f"model spec is longer than {MAX_SPEC_LENGTH} characters")
        raw = text.strip()
        if not raw:
            raise InvalidModelSpec("empty model spec")
        if _CONTROL.search(raw):
            raise InvalidModelSpec(f"model spec {raw!r} contains control characters")

        rest, backend = raw, None
        if "@" in raw:
            rest, _, backend_text = raw.rpartition("@")
            if not backend_text.strip():
                raise InvalidModelSpec(f"empty backend in {raw!r} (nothing after '@')")
            backend = normalize_backend(backend_text)
        rest = rest.strip()

        lowered = rest.lower()
        for prefix in HF_PREFIXES:
            if lowered.startswith(prefix):
                return cls._parse_hf(raw, rest[len(prefix) :], backend)

        provider = None
        if "/" in rest:
            provider, _, rest = rest.rpartition("/")
            _check_provider(raw, provider)
        if not rest:
            raise InvalidModelSpec(f"empty model name in {raw!r}")
        model, sep, variant_text = rest.partition(":")
        variant = variant_text if sep else None
        _check_part(raw, "model name", model, _NAME)
        if variant is not None:
            _check_part(raw, "variant", variant, _VARIANT)
        return cls(model=model, variant=variant, provider=provider, backend=backend)

    @classmethod
    def _parse_hf(cls, raw: str, rest: str, backend: str | None) -> ModelSpec:
        repo, sep, quant = rest.partition(":")
        parts = repo.split("/")
        if len(parts) != 2 or not all(parts):
            raise InvalidModelSpec(
                f"{raw!r}: a Hugging Face spec is hf:ORG/REPO[:QUANT], e.g. "
                "hf:bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
            )
        for part in parts:
            _check_part(raw, "repository", part, _NAME)
        variant = quant if sep else None
        if variant is not None:
            _check_part(raw, "quantization", variant, _VARIANT)
        return cls(model=parts[1], variant=variant, backend=backend, hf_repo=repo)

    @property
    def name(self) -> str:
        """``model[:variant]`` (``ORG/REPO[:QUANT]`` for Hugging Face specs)."""
        base = self.hf_repo if self.hf_repo else self.model
        return f"{base}:{self.variant}" if self.variant else base

    @property
    def is_hf(self) -> bool:
        return self.hf_repo is not None

    def with_backend(self, backend: str) -> ModelSpec:
        return ModelSpec(
            model=self.model,
            variant=self.variant,
            provider=self.provider,
            backend=normalize_backend(backend),
            hf_repo=self.hf_repo,
        )

    def __str__(self) -> str:
        if self.hf_repo:
            text = f"hf:{self.name}"
        else:
            text = f"{self.provider}/{self.name}" if self.provider else self.name
        return f"{text}@{self.backend}" if self.backend else text


def parse_spec(text: str | ModelSpec) -> ModelSpec:
    """Parse ``text``; a :class:`ModelSpec` passes through unchanged."""
    return text if isinstance(text, ModelSpec) else ModelSpec.parse(text)


def _check_provider(raw: str, provider: str) -> None:
    if not provider or provider.startswith("/"):
        raise InvalidModelSpec(f"{raw!r}: absolute paths are not model specs")
    for segment in provider.split("/"):
        if not segment:
            raise InvalidModelSpec(f"{raw!r}: empty path segment in provider {provider!r}")
        _check_part(raw, "provider", segment, _NAME)


def _check_part(raw: str, what: str, value: str, pattern: re.Pattern[str]) -> None:
    if not value:
        raise InvalidModelSpec(f"empty {what} in {raw!r}")
    if ".." in value:
        raise InvalidModelSpec(f"{raw!r}: '..' is not allowed in the {what}")
    if not pattern.fullmatch(value):
        raise InvalidModelSpec(
            f"{raw!r}: invalid {what} {value!r} (letters, digits and . _ - + only, "
            "starting with a letter or digit)"
        )
