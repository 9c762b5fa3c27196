"""The evaluated state of recent conversations on a loaded model, so that a turn evaluates only
its new tokens even when several conversations take turns on one model.

llama-cpp-python reuses only the prefix a prompt shares with the *previous* call on the same
``Llama``: two notebooks' ``Agent``\\ s taking turns would re-read their whole history every
turn. Here, after each generation, the context's KV cache (sequence 0, without logits) is copied
out with the tokens it holds; before a generation, the saved state that shares the longest
reusable prefix with the new prompt is copied back in when it beats what the context holds.

What is reusable: every evaluated token, or, with ``reproducible``, only the leading positions a
cold evaluation would have computed in the same batches (whole batches of the prompt that
produced the state; see :func:`.generation.reuse_whole_batches`). The cache lives and
dies with its ``Llama`` (an unload, or a reload with another ``num_ctx``, starts empty), and holds
at most ``capacity`` bytes, least recently used first out.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llama_cpp import Llama


@dataclass(frozen=True)
class SavedState:
    tokens: tuple[int, ...]
    """The tokens whose KV the state holds (a prompt and its answer)."""
    valid: int
    """How many leading positions may be reused (whole batches of the prompt)."""
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + 4 * len(self.tokens)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def usable(state_tokens: Sequence[int], valid: int, tokens: Sequence[int], batch: int) -> int:
    """Positions of ``tokens`` a context holding ``state_tokens`` (of which ``valid`` are
    reusable) can keep: whole batches, and never the whole prompt (its last token is evaluated
    again for the logits)."""
    common = min(common_prefix(state_tokens[:valid], tokens), len(tokens) - 1)
    return max(common - common % batch, 0)


class StateCache:
    """Saved states of one loaded model (thread-safe; the model itself is used by one
    generation at a time)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[tuple[int, ...], SavedState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._states.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def describe(self) -> dict[str, int]:
        """What ``info`` shows: how many states, their bytes, the bound, the restores."""
        return {
            "states": len(self),
            "bytes": self.held_bytes,
            "capacity_bytes": self.capacity,
            "hits": self.hits,
        }

    def restore_best(
        self, llama: Llama, tokens: Sequence[int], valid_now: int, batch: int
    ) -> int | None:
        """Copy into ``llama`` the saved state that reuses more of ``tokens`` (in multiples
        of ``batch``) than the context holding ``valid_now`` reusable positions; returns that
        state's ``valid`` (None when the context is better or as good)."""
        current = llama.input_ids[: int(llama.n_tokens)].tolist()
        best, best_usable = None, usable(current, valid_now, tokens, batch)
        with self._lock:
            for saved in self._states.values():
                reused = usable(saved.tokens, saved.valid, tokens, batch)
                if reused > best_usable:
                    best, best_usable = saved, reused
            if best is None:
                return None
            self._states.move_to_end(best.tokens)
        _set_sequence(llama, best.data)
        count = len(best.tokens)
        llama.input_ids[:count] = best.tokens
        llama.n_tokens = count
        self.hits += 1
        return best.valid

    def save(self, llama: Llama, valid: int) -> None:
        """Keep the state of ``llama``'s context, of which ``valid`` positions are reusable;
        states it supersedes (their reusable part is a prefix of it) are dropped."""
        if self.capacity <= 0:
            return
        tokens = tuple(int(t) for t in llama.input_ids[: int(llama.n_tokens)])
        if valid <= 0 or not tokens or _sequence_size(llama) + 4 * len(tokens) > self.capacity:
            return  # (a state larger than the whole cache is not even copied out)
        saved = SavedState(tokens, valid, _get_sequence(llama))
        with self._lock:
            for key, old in list(self._states.items()):
                if (
                    common_prefix(old.tokens[: old.valid], tokens) >= old.valid
                    and old.valid <= valid
                ):
                    del self._states[key]
            self._states[tokens] = saved
            total = sum(s.size for s in self._states.values())
            while total > self.capacity and len(self._states) > 1:
                _, dropped = self._states.popitem(last=False)
                total -= dropped.size


def _sequence_size(llama: Llama) -> int:
    import llama_cpp

    return int(llama_cpp.llama_state_seq_get_size(llama._ctx.ctx, 0))


def _get_sequence(llama: Llama) -> bytes:
    import llama_cpp

    ctx = llama._ctx.ctx
    size = _sequence_size(llama)
    buffer = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0))
    return ctypes.string_at(buffer, written)


def _set_sequence(llama: Llama, data: bytes) -> None:
    import llama_cpp

    ctx = llama._ctx.ctx
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if int(llama_cpp.llama_state_seq_set_data(ctx, buffer, len(data), 0)) != len(data):
        raise RuntimeError("llama.cpp did not take the saved conversation state")
