"""Run a script in the kernel the way ``python SCRIPT ARGS`` would (``llmspell run``).

The CLI sends a cell that imports :func:`run_script` and calls it with the script's source
(read on the client's side, so the kernel may be on another machine) and the cell's
``globals()``: the kernel's user namespace, where ``LocalLLM`` and ``Agent`` live.

What the script reads from stdin comes from the client: ``input()`` is the kernel's, which asks
the client over Jupyter's stdin channel, and with ``stdin`` the script's ``sys.stdin`` reads its
lines the same way (:class:`ClientStdin`). With ``cwd`` (the client's directory, when the kernel
runs on the client's machine) the script runs there, so relative paths mean what they mean to
the person who typed them.
"""

from __future__ import annotations

import builtins
import io
import linecache
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import providers.errors

# Names of the kernel's user namespace that a script sees, as if it had imported them.
KERNEL_NAMES = ("LocalLLM", "Agent")


class LLMSpellScriptFailed(Exception):
    """The script raised (its traceback is already on stderr); the message is the error."""


class LLMSpellScriptExit(Exception):
    """The script called ``sys.exit`` with a non-zero status; the message is the status."""


class ClientStdin(io.TextIOBase):
    """A ``sys.stdin`` whose lines come from the client, one ``input("")`` each: in a cell that
    is the kernel's ``raw_input``, an ``input_request`` on the stdin channel that the client
    answers with its next line (``EOFError`` at the end of its input)."""

    def __init__(self) -> None:
        super().__init__()
        self._eof = False

    def readable(self) -> bool:
        return True

    def readline(self, size: int = -1, /) -> str:  # type: ignore[override]  # as typeshed
        if self._eof:
            return ""
        try:
            line = builtins.input("")
        except EOFError:
            self._eof = True
            return ""
        return line + "\n"

    def read(self, size: int | None = -1, /) -> str:
        if size is not None and size >= 0:
            raise io.UnsupportedOperation("sys.stdin of `llmspell run` reads whole lines only")
        return "".join(iter(self.readline, ""))


def run_script(
    *,
    path: str,
    source: str,
    argv: list[str],
    model: str | None,
    directory: str,
    user_ns: Mapping[str, Any],
    cwd: str | None = None,
    stdin: bool = False,
) -> None:
    """Run ``source`` as ``__main__`` in a namespace of its own.

    The namespace holds ``user_ns``'s ``LocalLLM`` and ``Agent``; ``sys.argv`` is ``argv``;
    ``directory`` (the script's, absolute) comes first on ``sys.path`` when it exists here;
    ``model``, if given, is ``LocalLLM``'s default model meanwhile; ``cwd``, when it exists
    here, is the working directory meanwhile; with ``stdin``, ``sys.stdin`` is a
    :class:`ClientStdin`. The source is registered with :mod:`linecache` so that tracebacks
    show its lines. Everything is restored after.

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
    saved_cwd = os.getcwd() if cwd is not None and os.path.isdir(cwd) else None
    saved_stdin = sys.stdin
    failure: Exception | None = None
    try:
        if saved_cwd is not None and cwd is not None:
            os.chdir(cwd)
        if stdin:
            sys.stdin = ClientStdin()
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
        print(script_traceback(exc), end="", file=sys.stderr)
        failure = LLMSpellScriptFailed(f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
        sys.stdin = saved_stdin
        if saved_cwd is not None:
            os.chdir(saved_cwd)
        if added_path and directory in sys.path:
            sys.path.remove(directory)
        if llm is not None and model is not None:
            llm.set_default_model(previous_model)
        sys.stdout.flush()
        sys.stderr.flush()
    if failure is not None:
        raise failure from None


# Where llmspell's own code lives: an llmspell error's traceback stops before it.
_OWN_CODE = tuple(
    str(Path(file).resolve().parent) + os.sep
    for file in (__file__, providers.errors.__file__)
    if file is not None
)


def script_traceback(exc: BaseException) -> str:
    """The traceback of an exception the script raised, from the script's first frame (the
    frame of :func:`run_script` is left out). An llmspell error (an unknown model, a backend
    that is down...) says what is wrong in its message: its traceback ends at the last frame
    before llmspell's own code, without the foreign error it was translated from."""
    frames = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    report = traceback.TracebackException(type(exc), exc, frames)
    if isinstance(exc, providers.errors.LLMSpellError):
        stack = list(report.stack)
        for index, frame in enumerate(stack):
            if frame.filename.startswith(_OWN_CODE):
                report.stack = traceback.StackSummary.from_list(stack[:index])
                break
        report.__cause__ = report.__context__ = None
    return "".join(report.format())
