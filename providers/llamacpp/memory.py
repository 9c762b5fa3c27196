"""Will a model load fit in memory? An estimate from the GGUF header, checked before the load.

A load needs the weights (the file, memory-mapped: pages the system may already cache), the KV
cache (``n_ctx`` positions of each layer's keys and values, 16-bit), and output buffers (the
logits of a batch, twice: llama.cpp's and llama-cpp-python's copy) plus a compute buffer. A load
whose estimate is more than the memory available (``MemAvailable``, within a cgroup's limit)
is refused with the estimate, instead of llama.cpp failing half-way or the kernel's machine
swapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from .generation import REUSE_BATCH
from .ids import BACKEND
from .metadata import GGUFMetadata

COMPUTE_BYTES = 64 * 2**20
"""What llama.cpp's compute buffer and a runner's own process take besides, roughly."""


@dataclass(frozen=True)
class Estimate:
    weights: int
    context: int
    """The KV cache."""
    buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.context + self.buffers


def estimate(metadata: GGUFMetadata, file_size: int, n_ctx: int) -> Estimate:
    values, arch = metadata.values, metadata.architecture or ""

    def number(key: str, default: int = 0) -> int:
        try:
            return int(values.get(f"{arch}.{key}", default))
        except ValueError:
            return default

    layers = number("block_count")
    heads = max(number("attention.head_count", 1), 1)
    kv_heads = number("attention.head_count_kv", heads) or heads
    width = number("embedding_length")
    key = number("attention.key_length", width // heads)
    value = number("attention.value_length", width // heads)
    per_position = layers * kv_heads * (key + value) * 2
    vocab = metadata.vocab_size or 0
    return Estimate(
        weights=file_size,
        context=per_position * n_ctx,
        buffers=2 * 4 * vocab * REUSE_BATCH + COMPUTE_BYTES,
    )


def available_bytes() -> int | None:
    """Memory the system can give a new process now (None: unknown)."""
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        free = int(fields["MemAvailable"].split()[0]) * 1024
    except (KeyError, ValueError, IndexError):
        return None
    limit = _cgroup_room()
    return free if limit is None else min(free, limit)


def _cgroup_room() -> int | None:
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        used = int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def check_fits(
    model_id: str,
    metadata: GGUFMetadata,
    file_size: int,
    n_ctx: int,
    available: int | None = None,
) -> Estimate:
    """The estimate for loading ``model_id`` with ``n_ctx``; :class:`ModelLoadError` with it
    when it is more than ``available`` (default: :func:`available_bytes`)."""
    need = estimate(metadata, file_size, n_ctx)
    room = available if available is not None else available_bytes()
    if room is not None and need.total > room:
        raise ModelLoadError(
            f"{model_id} with num_ctx {n_ctx} needs about {_gib(need.total)} (weights"
            f" {_gib(need.weights)}, context {_gib(need.context)}, buffers"
            f" {_gib(need.buffers)}); {_gib(room)} is available: ask for a smaller num_ctx,"
            " unload other models, or free memory",
            model=model_id,
            backend=BACKEND,
        )
    return need


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"
