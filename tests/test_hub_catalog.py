"""The llamacpp model catalog (providers/llamacpp/catalog.json) and its loader."""

from __future__ import annotations

import json
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from providers.errors import ConfigError
from providers.llamacpp import catalog
from providers.llamacpp.hub import quant_label
from providers.spec import ModelSpec

REQUIRED = {
    "tinyllama": "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
    "phi3": "microsoft/Phi-3-mini-4k-instruct-gguf",
    "llama3.2": "bartowski/Llama-3.2-1B-Instruct-GGUF",
    "gemma3-270m": "unsloth/gemma-3-270m-it-GGUF",
    "gemma3-1b": "unsloth/gemma-3-1b-it-GGUF",
    "smollm2": "bartowski/SmolLM2-1.7B-Instruct-GGUF",
}


def test_catalog_has_the_promised_models() -> None:
    by_name = {entry.name: entry.repo for entry in catalog.entries()}
    assert {name: by_name.get(name) for name in REQUIRED} == REQUIRED


@pytest.mark.parametrize("entry", catalog.entries(), ids=lambda e: e.name)
def test_entries_are_consistent(entry: catalog.CatalogEntry) -> None:
    assert entry.default_quant in entry.quants
    assert len(set(entry.quants)) == len(entry.quants)
    # Every quant is something hub.resolve can find in a file name of the usual shapes.
    for quant in entry.quants:
        assert quant_label(f"model-{quant}.gguf") == quant.upper()
    assert str(ModelSpec.parse(f"{entry.name}:{entry.default_quant}@llamacpp")) == (
        f"{entry.name}:{entry.default_quant}@llamacpp"
    )
    assert ModelSpec.parse(f"hf:{entry.repo}").hf_repo == entry.repo
    assert entry.family and entry.parameter_size and entry.description
    assert entry.size_bytes is None or entry.size_bytes > 10_000_000


def test_lookup_is_case_insensitive() -> None:
    entry = catalog.lookup("Gemma3-270M")
    assert entry is not None and entry.name == "gemma3-270m"
    assert catalog.lookup(" phi3 ") is not None
    assert catalog.lookup("gpt-5") is None


def test_some_entries_are_recommended() -> None:
    recommended = [e.name for e in catalog.entries() if e.recommended]
    assert "gemma3-270m" in recommended
    assert len(recommended) < len(catalog.entries())


def test_catalog_is_package_data() -> None:
    resource = files("providers.llamacpp") / catalog.CATALOG_FILE
    assert json.loads(resource.read_text(encoding="utf-8"))["models"]
    pyproject = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "*.json" in package_data["providers.llamacpp"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"default_quant": "Q9"}, "default_quant 'Q9' is not among its quants"),
        ({"quants": "Q4_K_M"}, "'quants' must be a list"),
        ({"size_bytes": -1}, "'size_bytes' must be a positive integer"),
        ({"name": "../evil"}, "entry 0"),
        ({"recommended": "yes"}, "'recommended' must be true or false"),
    ],
)
def test_a_broken_catalog_is_a_clear_config_error(
    change: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = json.loads((files("providers.llamacpp") / catalog.CATALOG_FILE).read_text())
    broken = {"models": [{**good["models"][0], **change}]}
    (tmp_path / catalog.CATALOG_FILE).write_text(json.dumps(broken))
    monkeypatch.setattr(catalog, "files", lambda package: tmp_path)
    catalog._load.cache_clear()
    try:
        with pytest.raises(ConfigError, match="model catalog") as caught:
            catalog.entries()
        assert message in str(caught.value)
    finally:
        catalog._load.cache_clear()
