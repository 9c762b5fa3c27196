"""What every backend's ``embed`` shares: the check of its inputs, L2 normalization, and the
check of the vectors a server sent back.

An embedding request takes one or more texts; each must be a non-empty string (an empty one
has no tokens to pool: every backend refuses it here, naming its index, before anything is
sent). ``truncate`` follows Ollama's ``/api/embed``: true (the default) cuts an input longer
than the model's embedding context to fit; false refuses it with :class:`InvalidRequest`
naming the input. ``normalize`` (default true, as Ollama's vectors are) scales each vector to
length 1, so that a dot product is the cosine similarity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import GenerationError, InvalidRequest


def check_inputs(texts: Sequence[str], *, model: str | None = None) -> list[str]:
    """``texts`` as a list, or :class:`InvalidRequest` naming the first bad one."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise InvalidRequest(
            "embed: 'input' must not be empty (give at least one text)", model=model
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequest(
                f"embed: input[{index}] must be a string, not {type(text).__name__}", model=model
            )
        if not text.strip():
            raise InvalidRequest(
                f"embed: input[{index}] is empty: there is nothing to embed", model=model
            )
    return list(texts)


def l2_normalized(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        return [float(x) for x in vector]
    return [x / norm for x in vector]


def checked_vectors(
    data: Any, count: int, *, normalize: bool, model: str, backend: str, source: str
) -> list[list[float]]:
    """The vectors a server sent (``data``: a list of lists of numbers), checked: one per
    input, all of one length, finite; normalized when asked. ``source`` names the reply
    (``Ollama's /api/embed``) in the error."""
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise GenerationError(
            f"{source} sent {got} embeddings for {count} inputs", model=model, backend=backend
        )
    vectors: list[list[float]] = []
    for index, vector in enumerate(data):
        if (
            not isinstance(vector, list)
            or not vector
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector)
            or not all(math.isfinite(x) for x in vector)
        ):
            raise GenerationError(
                f"{source} sent embedding {index} that is not a list of finite numbers",
                model=model,
                backend=backend,
            )
        if vectors and len(vector) != len(vectors[0]):
            raise GenerationError(
                f"{source} sent embeddings of different lengths ({len(vectors[0])} and"
                f" {len(vector)})",
                model=model,
                backend=backend,
            )
        floats = [float(x) for x in vector]
        vectors.append(l2_normalized(floats) if normalize else floats)
    return vectors
