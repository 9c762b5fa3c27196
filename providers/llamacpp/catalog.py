"""The catalog of GGUF models that ``pull NAME@llamacpp`` knows by name.

The data lives in ``catalog.json`` next to this module (package data, not code): one entry per
name, with the Hugging Face repository holding its GGUF files, the quantizations published
there and the default one. Sizes are those of the default quantization, approximate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from ..errors import ConfigError, InvalidModelSpec
from ..spec import ModelSpec

CATALOG_FILE = "catalog.json"


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    repo: str
    """``ORG/REPO`` on the Hugging Face Hub."""
    default_quant: str
    quants: tuple[str, ...]
    family: str
    parameter_size: str
    size_bytes: int | None
    """Approximate size of the default quantization's file."""
    description: str
    recommended: bool


def entries() -> list[CatalogEntry]:
    """Every catalog entry, in the order of the data file."""
    return list(_load())


def lookup(name: str) -> CatalogEntry | None:
    """The entry called ``name`` (case-insensitive), or None."""
    key = name.strip().lower()
    for entry in _load():
        if entry.name.lower() == key:
            return entry
    return None


@cache
def _load() -> tuple[CatalogEntry, ...]:
    resource = files(__package__ or "providers.llamacpp") / CATALOG_FILE
    where = f"model catalog {CATALOG_FILE}"
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}", path=CATALOG_FILE) from exc
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ConfigError(f"{where}: expected an object with a 'models' list", path=CATALOG_FILE)
    result: list[CatalogEntry] = []
    seen: set[str] = set()
    for index, raw in enumerate(models):
        entry = _entry(raw, f"{where}, entry {index}")
        if entry.name.lower() in seen:
            raise ConfigError(f"{where}: duplicate name {entry.name!r}", path=CATALOG_FILE)
        seen.add(entry.name.lower())
        result.append(entry)
    return tuple(result)


def _entry(raw: Any, where: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object", path=CATALOG_FILE)

    def text(key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: '{key}' must be a non-empty string", key=key)
        return value

    name, repo, default_quant = text("name"), text("repo"), text("default_quant")
    quants = raw.get("quants")
    if not isinstance(quants, list) or not all(isinstance(q, str) and q for q in quants):
        raise ConfigError(f"{where}: 'quants' must be a list of strings", key="quants")
    if default_quant not in quants:
        raise ConfigError(
            f"{where}: default_quant {default_quant!r} is not among its quants", key="default_quant"
        )
    size = raw.get("size_bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ConfigError(f"{where}: 'size_bytes' must be a positive integer", key="size_bytes")
    recommended = raw.get("recommended", False)
    if not isinstance(recommended, bool):
        raise ConfigError(f"{where}: 'recommended' must be true or false", key="recommended")
    try:
        spec = ModelSpec.parse(f"{name}:{default_quant}")
        hf = ModelSpec.parse(f"hf:{repo}")
    except InvalidModelSpec as exc:
        raise ConfigError(f"{where}: {exc.message}", key="name") from exc
    if spec.model != name or hf.hf_repo != repo:
        raise ConfigError(f"{where}: name {name!r} or repo {repo!r} is not valid", key="name")
    return CatalogEntry(
        name=name,
        repo=repo,
        default_quant=default_quant,
        quants=tuple(quants),
        family=text("family"),
        parameter_size=text("parameter_size"),
        size_bytes=size,
        description=text("description"),
        recommended=recommended,
    )
