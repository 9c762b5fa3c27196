"""One routing rule: ``resolve`` (a model that should be installed) and ``pull`` (a model that is
not here yet) pick their backend the same way, but for the lookup of installed models."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers import Config, ModelNotFound, ProviderManager
from providers.llamacpp import LlamaCppBackend
from tests.isolation import closed_port_url

SPECS = ("x", "gemma3-270m", "llama3.1:8b", "hf:org/repo:Q4_K_M", "x@llamacpp")
INSTALLABLE = ("gemma3-270m", "hf:org/repo:Q4_K_M", "x@llamacpp")
"""Specs that route to a backend even when nothing has them: named, catalog, ``hf:``."""


def manager(tmp_path: Path, *, default: str | None = None, ollama: bool = True) -> ProviderManager:
    settings: dict[str, object] = {"default_backend": default} if default else {}
    settings["providers"] = {
        "llamacpp": {"options": {"model_directory": str(tmp_path / "models")}},
        # Nothing listens there: Ollama is down, as for a new user who has not installed it.
        "ollama": {"enabled": ollama, "base_url": closed_port_url()},
    }
    return ProviderManager(Config.from_dict(settings))


def install(routed: ProviderManager, tmp_path: Path, model_id: str) -> None:
    """Put a (fake, never loaded) GGUF in the llamacpp store as ``model_id``."""
    backend = routed.backend("llamacpp")
    assert isinstance(backend, LlamaCppBackend)
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"GGUF" + model_id.encode())
    backend.store.import_file(source, model_id)


@pytest.mark.parametrize("spec", INSTALLABLE)
def test_pull_routes_like_resolve_with_ollama_disabled(tmp_path: Path, spec: str) -> None:
    routed = manager(tmp_path, ollama=False)
    backend, resolved = routed.resolve(spec)
    pulled_backend, pulled = routed.route(spec, installed=False)
    assert (pulled_backend.name, pulled) == (backend.name, resolved)
    assert resolved.backend == "llamacpp"


@pytest.mark.parametrize("spec", SPECS)
def test_pull_follows_default_backend(tmp_path: Path, spec: str) -> None:
    routed = manager(tmp_path, default="llamacpp")
    # A name only Ollama's library has goes there; everything else to the default.
    expected = "ollama" if spec == "llama3.1:8b" else "llamacpp"
    assert routed.route(spec, installed=False)[1].backend == expected
    if spec == "x":
        with pytest.raises(ModelNotFound, match="not installed anywhere"):
            routed.resolve(spec)
    else:
        assert routed.resolve(spec)[1].backend == expected


def test_pull_falls_back_to_ollama_like_resolve(tmp_path: Path) -> None:
    routed = manager(tmp_path)
    assert routed.route("x", installed=False)[1].backend == "ollama"
    assert routed.route("hf:org/repo:Q4_K_M", installed=False)[1].backend == "llamacpp"


# What a new user trips over (issue 21) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "gemma3-270m", "tinyllama"])
def test_a_catalog_name_is_pulled_by_the_backend_whose_catalog_has_it(
    tmp_path: Path, name: str
) -> None:
    """`model pull qwen2.5-0.5b` (listed by `model available` for llamacpp) went to Ollama."""
    routed = manager(tmp_path)
    assert routed.route(name, installed=False)[1].backend == "llamacpp"
    # A name only Ollama's library has still goes there, and an unknown one to the fallback.
    assert routed.route("llama3.1:8b", installed=False)[1].backend == "ollama"
    assert routed.route("x", installed=False)[1].backend == "ollama"


def test_a_typo_is_not_installed_anywhere_with_close_matches(tmp_path: Path) -> None:
    """`prompt -m gemma3-27m hi` said "Ollama is not running at ...", with no hint."""
    routed = manager(tmp_path)
    install(routed, tmp_path, "gemma3-270m:Q4_K_M")
    with pytest.raises(ModelNotFound) as raised:
        routed.resolve("gemma3-27m")
    message = raised.value.message
    assert "model 'gemma3-27m' is not installed anywhere" in message
    assert "llamacpp: 1 installed" in message
    assert "ollama: could not be asked, Ollama is not running at" in message
    assert "did you mean gemma3-270m" in message
    with pytest.raises(ModelNotFound, match="did you mean gemma3-270m"):
        routed.info("gemma3-27m")
    assert routed.resolve("gemma3-270m")[1].backend == "llamacpp"  # the right name still works


def test_a_removed_catalog_model_is_reported_by_the_store_it_came_from(tmp_path: Path) -> None:
    """After removing gemma3-270m:Q4_K_M the advice was to pull it @ollama."""
    routed = manager(tmp_path)
    install(routed, tmp_path, "gemma3-270m:Q4_K_M")
    routed.remove("gemma3-270m:Q4_K_M")
    with pytest.raises(ModelNotFound) as raised:
        routed.info("gemma3-270m")
    message = raised.value.message
    assert "not installed in the llamacpp store" in message
    assert "pull it with `llmspell model pull gemma3-270m@llamacpp`" in message
    assert "@ollama" not in message


def test_an_unknown_name_in_the_store_suggests_import_not_pull(tmp_path: Path) -> None:
    routed = manager(tmp_path)
    with pytest.raises(ModelNotFound, match="import a GGUF file with `llmspell model import FILE"):
        routed.info("no-such-model@llamacpp")
