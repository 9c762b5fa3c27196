"""Run a script in the kernel the way ``python SCRIPT ARGS`` would (``llmspell run``).

The CLI sends a cell that imports :func:`run_script` and calls it with the script's source
(read on the client's side, so the kernel may be on another machine) and the cell's
``globals()``: the kernel's user namespace, where ``LocalLLM`` and ``Agent`` live.
"""

from __future__ import annotations

import builtins
import linecache
import os
import sys
import traceback
from collections.abc import Mapping
from typing import Any

# Names of the kernel's user namespace that a script sees, as if it had imported them.
KERNEL_NAMES = ("LocalLLM", "Agent")


class LLMSpellScriptFailed(Exception):
    """The script raised (its traceback is already on stderr); the message is the error."""


class LLMSpellScriptExit(Exception):
    """The script called ``sys.exit`` with a non-zero status; the message is the status."""


def run_script(
    *,
    path: str,
    source: str,
    argv: list[str],
    model: str | None,
    directory: str,
    user_ns: Mapping[str, Any],
) -> None:
    """Run ``source`` as ``__main__`` in a namespace of its own.

    The namespace holds ``user_ns``'s ``LocalLLM`` and ``Agent``; ``sys.argv`` is ``argv``;
    ``directory`` (the script's, absolute) comes first on ``sys.path`` when it exists here;
    ``model``, if given, is ``LocalLLM``'s default model meanwhile. The source is registered
    with :mod:`linecache` so that tracebacks show its lines. Everything is restored after.

    If the script raises, a plain Python traceback that starts at the script's first frame is
    printed on stderr and :class:`LLMSpellScriptFailed` is raised; ``sys.exit(n)`` with n
    not 0 raises :class:`LLMSpellScriptExit` (a non-integer status is printed on stderr and
    counts as 1). The raised exception's name becomes the execute reply's ``ename``.
    """
    llm = user_ns.get("LocalLLM")
    previous_model = llm.default_model if llm is not None else None
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    for name in KERNEL_NAMES:
        if name in user_ns:
            namespace[name] = user_ns[name]
    saved_argv = sys.argv
    # Like `python SCRIPT`: the script's directory comes first on sys.path (when it exists here).
    added_path = os.path.isdir(directory) and directory not in sys.path
    if added_path:
        sys.path.insert(0, directory)
    failure: Exception | None = None
    try:
        if model is not None:
            if llm is None:
                raise RuntimeError("this kernel has no LocalLLM: --model cannot be applied")
            llm.set_default_model(model)
        linecache.cache[path] = (len(source), None, source.splitlines(True), path)
        sys.argv = argv
        exec(compile(source, path, "exec"), namespace)
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        if code:
            failure = LLMSpellScriptExit(str(code))
    except BaseException as exc:
        # The first frame is this function's: the traceback starts at the script's.
        frames = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, frames, file=sys.stderr)
        failure = LLMSpellScriptFailed(f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
        if added_path and directory in sys.path:
            sys.path.remove(directory)
        if llm is not None and model is not None:
            llm.set_default_model(previous_model)
        sys.stdout.flush()
        sys.stderr.flush()
    if failure is not None:
        raise failure from None
