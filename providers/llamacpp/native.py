"""Process-wide set-up of llama.cpp, done once before its first use (:func:`prepare_llama_cpp`).

1. llama.cpp's native log goes to Python logging (logger ``providers.llamacpp.native``).
   llama-cpp-python installs, at import time, a callback that prints raw text to stderr; it is
   replaced by one that hands each line to Python logging, so nothing of llama.cpp reaches the
   terminal unless the host configured a handler for it.
2. llama-cpp-python's ``suppress_stdout_stderr`` is disabled. With ``verbose=False`` it swaps
   ``sys.stdout``/``sys.stderr`` and the process's file descriptors 1 and 2 while a model
   loads: global state that silences every other thread meanwhile, and two loads on two threads
   can leave each other's ``/dev/null`` in place for good. With the log routed it has nothing
   left to hide.
3. On CPUs that advertise AMX, models are built with ``use_extra_bufts = False``: llama.cpp's
   AMX weight repacking crashes with SIGSEGV in ``ggml_backend_amx_mul_mat`` on the first decode
   (seen with llama-cpp-python 0.3.36); the plain CPU path works. ``Llama()`` has no argument
   for it, so the default model parameters it starts from are wrapped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger("providers.llamacpp.native")

# enum ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the last line).
# (llama-cpp-python's own _logger.py still uses an older numbering.)
_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.DEBUG,  # llama.cpp's INFO is dozens of lines per model load
    # llama.cpp's warnings are about the model file and cache layout (e.g. "control-looking
    # token", "using full-size SWA cache"): nothing a user can act on, and every real failure
    # also surfaces as an exception. They show with --log-level info.
    3: logging.INFO,
    4: logging.ERROR,
}
_CONT = 5
_MARK = "_llmspell_no_extra_bufts"

_log_lock = threading.Lock()
_setup_lock = threading.Lock()
_installed: Any = None  # the ctypes callback; must stay referenced while llama.cpp may call it
_pending: list[str] = []
_pending_level = logging.DEBUG
_collecting = threading.local()  # .lines: where native_errors() gathers this thread's errors


def _on_native_log(level: int, text: bytes | None, _user_data: Any) -> None:
    global _pending_level
    try:
        piece = (text or b"").decode("utf-8", errors="replace")
        with _log_lock:
            if level != _CONT:
                _pending_level = _LEVELS.get(level, logging.DEBUG)
            _pending.append(piece)
            if not piece.endswith("\n"):
                return  # a partial line (e.g. the dots of a load): wait for its end
            line = "".join(_pending).rstrip()
            _pending.clear()
            emit_level = _pending_level
        if line:
            log.log(emit_level, "%s", line)
            collected = getattr(_collecting, "lines", None)
            if collected is not None and emit_level >= logging.ERROR:
                collected.append(line)
    except Exception:  # an exception must never unwind into C code
        return


@contextlib.contextmanager
def native_errors() -> Iterator[list[str]]:
    """The error lines llama.cpp logs on this thread inside the block: its reason for a failed
    model load (llama-cpp-python's exception only says "Failed to load model from file")."""
    lines: list[str] = []
    outer = getattr(_collecting, "lines", None)
    _collecting.lines = lines
    try:
        yield lines
    finally:
        _collecting.lines = outer


@contextlib.contextmanager
def _no_fd_redirect(disable: bool = True) -> Iterator[None]:
    yield None


@cache
def cpu_has_amx() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and " amx_" in line for line in text.splitlines())


def _ensure_no_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as native

    current = native.llama_model_default_params
    if getattr(current, _MARK, False):
        return

    def params() -> Any:
        value = current()
        value.use_extra_bufts = False
        return value

    setattr(params, _MARK, True)
    native.llama_model_default_params = params


def prepare_llama_cpp() -> None:
    """Route the native log and apply the workarounds above. Cheap after the first call; call
    it before every model load (the AMX wrapper is re-checked in case someone restored the
    original function)."""
    global _installed
    with _setup_lock:
        if _installed is None:
            import llama_cpp
            import llama_cpp._internals
            import llama_cpp.llama

            callback = llama_cpp.llama_log_callback(_on_native_log)
            llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
            # Model and context creation look the helper up in these two modules.
            for module in (llama_cpp.llama, llama_cpp._internals):
                setattr(module, "suppress_stdout_stderr", _no_fd_redirect)  # noqa: B010
            _installed = callback
        if cpu_has_amx():
            _ensure_no_extra_buffer_types()


def broken_weights(llama: Any) -> str | None:
    """Why the weights of a loaded model cannot be right, or None: the logits of one
    evaluated token (BOS) are NaN or infinite, or all the same (a file whose tensor data is
    garbage loads without complaint and then generates nothing). The context is reset after;
    the evaluation also pages the weights in, which the first generation would do anyway."""
    import llama_cpp
    import numpy as np

    try:
        llama.eval([llama.token_bos()])
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),)
        )
        finite = bool(np.isfinite(logits).all())
        spread = float(np.ptp(logits)) if finite else 0.0
    finally:
        llama.reset()
    if not finite:
        return "its weights give NaN or infinite logits (the tensor data is corrupt)"
    if spread == 0.0:
        return "its weights give the same logit for every token (the tensor data is corrupt)"
    return None
