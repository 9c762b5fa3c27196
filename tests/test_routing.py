"""One routing rule: ``resolve`` (a model that should be installed) and ``pull`` (a model that is
not here yet) pick their backend the same way, but for the lookup of installed models."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import Config, ProviderManager

SPECS = ("x", "gemma3-270m", "llama3.1:8b", "hf:org/repo:Q4_K_M", "x@llamacpp")


def manager(tmp_path: Path, *, default: str | None = None, ollama: bool = True) -> ProviderManager:
    settings: dict[str, object] = {"default_backend": default} if default else {}
    settings["providers"] = {
        "llamacpp": {"options": {"model_directory": str(tmp_path / "models")}},
        "ollama": {"enabled": ollama},
    }
    return ProviderManager(Config.from_dict(settings))


@pytest.mark.parametrize("spec", SPECS)
def test_pull_routes_like_resolve_with_ollama_disabled(tmp_path: Path, spec: str) -> None:
    routed = manager(tmp_path, ollama=False)
    backend, resolved = routed.resolve(spec)
    pulled_backend, pulled = routed.route(spec, installed=False)
    assert (pulled_backend.name, pulled) == (backend.name, resolved)
    assert resolved.backend == "llamacpp"


@pytest.mark.parametrize("spec", SPECS)
def test_pull_follows_default_backend(tmp_path: Path, spec: str) -> None:
    routed = manager(tmp_path, default="llamacpp")
    assert routed.route(spec, installed=False)[1].backend == "llamacpp"
    assert routed.resolve(spec)[1].backend == "llamacpp"


def test_pull_falls_back_to_ollama_like_resolve(tmp_path: Path) -> None:
    routed = manager(tmp_path)
    assert routed.route("x", installed=False)[1].backend == "ollama"
    assert routed.route("hf:org/repo:Q4_K_M", installed=False)[1].backend == "llamacpp"
