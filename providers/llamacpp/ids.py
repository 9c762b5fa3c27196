"""Model ids in the llamacpp store: what an imported file is called, and which installed model
a spec names.

Lookup (:func:`find_installed`) of a spec ``base[:variant]`` among the installed ids (``base`` is
``hf:ORG/REPO`` for Hub specs):

- with a variant: the id ``base:variant``, else the one id equal to it ignoring case;
- without: the id ``base`` itself, else its one installed variant ``base:*`` (ignoring case),
  else among several variants the default quantization (the catalog entry's, ``Q4_K_M`` for
  ``hf:`` repos); several variants and none of them the default is an error naming them.

Anything else is :class:`ModelNotFound`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidModelSpec, ModelNotFound
from ..spec import ModelSpec
from .store import StoredModel, validate_id

BACKEND = "llamacpp"
HF_DEFAULT_QUANT = "Q4_K_M"


def import_id(name: str) -> str:
    """The store id for ``llmspell model import FILE NAME``."""
    spec = ModelSpec.parse(name)
    if spec.backend not in (None, BACKEND) or spec.provider is not None or spec.is_hf:
        raise InvalidModelSpec(
            f"invalid import name {name!r}: expected name[:variant], e.g. my-gemma:q4",
            model=name,
        )
    return spec.name


def id_from_file(path: Path) -> str:
    """The store id of a GGUF imported without a name, from its file name."""
    stem = path.name.lower().removesuffix(".gguf")
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "-" for c in stem)
    cleaned = re.sub(r"\.{2,}", ".", cleaned.strip("-._+"))
    if not cleaned:
        raise InvalidModelSpec(
            f"cannot derive a model name from the file name {path.name!r}: pass a name",
            model=path.name,
        )
    return validate_id(cleaned).name


def default_quant(spec: ModelSpec) -> str:
    """The quantization a spec without a variant means: its catalog entry's default."""
    if spec.is_hf:
        return HF_DEFAULT_QUANT
    from .catalog import lookup

    entry = lookup(spec.model)
    return entry.default_quant if entry is not None else HF_DEFAULT_QUANT


def find_installed(spec: ModelSpec, models: Sequence[StoredModel], root: Path) -> StoredModel:
    """The model of ``models`` (installed in the store at ``root``) that ``spec`` names."""
    base = f"hf:{spec.hf_repo}" if spec.is_hf else spec.model
    if spec.variant:
        wanted = f"{base}:{spec.variant}"
        found = [m for m in models if m.id == wanted] or [
            m for m in models if m.id.lower() == wanted.lower()
        ]
        if len(found) == 1:
            return found[0]
    else:
        exact = [m for m in models if m.id == base]
        if exact:
            return exact[0]
        prefix = base.lower() + ":"
        variants = [m for m in models if m.id.lower().startswith(prefix)]
        if len(variants) == 1:
            return variants[0]
        if variants:
            default = default_quant(spec)
            chosen = [m for m in variants if m.id.lower() == prefix + default.lower()]
            if chosen:
                return chosen[0]
            raise ModelNotFound(
                f"several variants of {base!r} are installed"
                f" ({', '.join(m.id for m in variants)}): name one",
                model=spec.name,
                backend=BACKEND,
            )
    raise ModelNotFound(
        f"model {spec.name!r} is not installed in the llamacpp store ({root}):"
        f" {_how_to_install(spec, models)}",
        model=spec.name,
        backend=BACKEND,
    )


def _how_to_install(spec: ModelSpec, models: Sequence[StoredModel]) -> str:
    """What to do about a model that is not installed: a close installed id, then the pull
    that would fetch it (a catalog name or ``hf:``), else the import."""
    from .catalog import lookup

    ids = [m.id for m in models]
    close = difflib.get_close_matches(spec.name, [*ids, *(i.split(":", 1)[0] for i in ids)], 3)
    hint = f"did you mean {' or '.join(dict.fromkeys(close))}? " if close else ""
    if spec.is_hf or lookup(spec.model) is not None:
        name = f"hf:{spec.name}" if spec.is_hf else spec.name
        return f"{hint}pull it with `llmspell model pull {name}@llamacpp`"
    return (
        f"{hint}import a GGUF file with `llmspell model import FILE --name {spec.name}`, or"
        " pull one (`llmspell model available --backend llamacpp`)"
    )
