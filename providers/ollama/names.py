"""Model specs to Ollama model names, and name matching the way Ollama does it.

Ollama names are ``[namespace/]model[:tag]``; a name without a tag means ``:latest``.
``hf:ORG/REPO[:QUANT]`` becomes ``hf.co/ORG/REPO[:QUANT]`` (Ollama pulls GGUF repositories from
the Hugging Face Hub by that name). The spec's provider is dropped when it is one of llmspell's
generic prefixes (``local/``, ``ollama/``, ``library/``); any other provider is an Ollama
namespace (``huihui_ai/model``) and stays part of the name.
"""

from __future__ import annotations

from ..spec import ModelSpec

DEFAULT_TAG = "latest"
GENERIC_PROVIDERS = frozenset({"local", "ollama", "library", "models"})


def ollama_name(spec: ModelSpec) -> str:
    """The name to send to Ollama for ``spec`` (tag included only if the spec has one)."""
    if spec.hf_repo:
        return f"hf.co/{spec.name}"
    provider = spec.provider
    if provider and provider.lower() not in GENERIC_PROVIDERS:
        return f"{provider}/{spec.name}"
    return spec.name


def canonical(name: str) -> str:
    """``name`` with Ollama's default tag added and case folded, for comparisons."""
    text = name.strip().lower()
    last = text.rsplit("/", 1)[-1]
    if ":" not in last:
        text = f"{text}:{DEFAULT_TAG}"
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def same_model(a: str, b: str) -> bool:
    return canonical(a) == canonical(b)
