"""The curated list of Ollama library models offered by ``available`` (data: library.json)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ..errors import ConfigError
from ..types import AvailableModel

BACKEND = "ollama"
LIBRARY_FILE = "library.json"


@cache
def _entries() -> tuple[dict[str, Any], ...]:
    text = resources.files(__package__).joinpath(LIBRARY_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ConfigError(f"{LIBRARY_FILE}: expected an object with a 'models' list")
    return tuple(models)


def library_models(*, recommended_only: bool = False) -> list[AvailableModel]:
    result = []
    for entry in _entries():
        model = AvailableModel(
            name=str(entry["name"]),
            backend=BACKEND,
            description=str(entry["description"]),
            variants=tuple(str(v) for v in entry.get("variants", ())),
            size_bytes=entry.get("size_bytes"),
            recommended=bool(entry.get("recommended", False)),
            source=f"https://ollama.com/library/{entry['name']}",
        )
        if model.recommended or not recommended_only:
            result.append(model)
    return result
