"""The ``%llm`` / ``%%llm`` magics and the one-line display of llmspell errors in cells."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from IPython.core.error import UsageError

from providers import Cancelled, LLMSpellError, Message
from providers.options import generation_options

from .commands import generation
from .local_llm import LocalLLM
from .protocol.requests import GenerateRequest, validate
from .schemas import output_format, read_answer

USAGE = """\
%llm [-m SPEC] [--system TEXT] [--max-tokens N] [--temperature T] [--schema S] [--raw] PROMPT
%%llm [-m SPEC] [--system TEXT] [--max-tokens N] [--temperature T] [--schema S] [--raw]
PROMPT (the cell body)

Generates an answer with a local model and prints it as it is produced. --raw continues the
prompt as plain text, without the chat template (for base models). Without -m the default
model is used (LocalLLM.set_default_model(...) or $LLMSPELL_MODEL). With --schema (inline JSON
Schema, 'json', or the name of a variable holding a schema dict or a pydantic model class) the
answer is JSON that satisfies it, and the cell's value is the answer parsed. Quote values with
spaces; put -- before a prompt that starts with '-'."""

NO_MODEL_HINT = "pass %llm -m SPEC or LocalLLM.set_default_model(...)"

_FLAGS = {
    "-m": "model",
    "--model": "model",
    "--system": "system",
    "--max-tokens": "max_tokens",
    "--temperature": "temperature",
    "--schema": "schema",
}
_SWITCHES = {"--raw": "raw"}
"""Options without a value."""


@dataclass
class MagicArgs:
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    schema: str | None = None
    raw: bool = False
    prompt: str = ""


def parse_magic(line: str, cell: str | None) -> MagicArgs:
    """Parse the options of ``%llm`` (prompt = rest of the line) or ``%%llm`` (the cell body)."""
    args = MagicArgs()
    rest = line.strip()
    while rest.startswith("-"):
        flag, rest = _take_token(rest)
        if flag == "--":
            break
        if flag in _SWITCHES:
            setattr(args, _SWITCHES[flag], True)
            continue
        value: str | None = None
        if flag.startswith("--") and "=" in flag:
            flag, value = flag.split("=", 1)
        field = _FLAGS.get(flag)
        if field is None:
            raise UsageError(f"unknown option {flag!r} for %llm\n{USAGE}")
        if value is None:
            if not rest.strip():
                raise UsageError(f"option {flag} needs a value\n{USAGE}")
            value, rest = _take_token(rest)
        _set_option(args, field, flag, value)
    rest = rest.strip()
    if cell is None:
        args.prompt = rest
        if not args.prompt:
            raise UsageError(f"%llm needs a prompt\n{USAGE}")
    else:
        if rest:
            raise UsageError(
                f"%%llm takes only options on its first line (got {rest!r}); "
                "the prompt is the cell body"
            )
        args.prompt = cell.strip()
        if not args.prompt:
            raise UsageError(f"%%llm needs a prompt in the cell body\n{USAGE}")
    return args


def _take_token(text: str) -> tuple[str, str]:
    """The first shell-like word of ``text`` (quotes removed) and the text after it."""
    stream = io.StringIO(text)
    lexer = shlex.shlex(stream, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        token = lexer.get_token()
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"%llm: {exc} in {text!r}") from exc
    if token is None or token == lexer.eof:
        raise UsageError(f"%llm: expected a value in {text!r}")
    return token, text[stream.tell() :]


def _set_option(args: MagicArgs, field: str, flag: str, value: str) -> None:
    if field in ("model", "system", "schema"):
        setattr(args, field, value)
        return
    try:
        number: int | float = int(value) if field == "max_tokens" else float(value)
    except ValueError:
        kind = "an integer" if field == "max_tokens" else "a number"
        raise UsageError(f"{flag} must be {kind}, not {value!r}") from None
    setattr(args, field, number)


_LLM_LINE = re.compile(r"(?P<indent>[ \t]*)%llm(?P<rest>[ \t][^\r\n]*)(?P<end>\r?\n)?")


def protect_llm_lines(lines: list[str]) -> list[str]:
    """IPython input transformer: hand ``%llm`` prompts to the magic verbatim.

    Left to IPython, ``%llm Why is the sky blue?`` is read as a help request for ``blue`` (a
    trailing ``?``), and quotes in the prompt go through Python's tokenizer. The body of a cell
    magic is never touched.
    """
    if lines and lines[0].lstrip().startswith("%%"):
        return lines
    protected = []
    for line in lines:
        match = _LLM_LINE.fullmatch(line)
        if match is None or not match["rest"].strip():
            protected.append(line)
            continue
        call = f"get_ipython().run_line_magic('llm', {match['rest'].strip()!r})"
        protected.append(f"{match['indent']}{call}{match['end'] or ''}")
    return protected


class LLMMagic:
    """``%llm`` / ``%%llm`` bound to one :class:`LocalLLM`."""

    def __init__(self, llm: LocalLLM) -> None:
        self._llm = llm

    def __call__(self, line: str, cell: str | None = None) -> Any:
        args = parse_magic(line, cell)
        model = self._llm.require_model(args.model, NO_MODEL_HINT)
        options = generation_options(
            {"max_tokens": args.max_tokens, "temperature": args.temperature}, what="%llm"
        )
        reader = None
        if args.schema is not None:
            output, reader = output_format(_schema_value(args.schema), "%llm --schema")
            options = replace(options, format=output)
        fields: dict[str, Any] = {"model": model, "options": options}
        if args.raw:
            if args.system:
                raise UsageError("%llm --system needs the chat template: drop --raw")
            fields["prompt"] = args.prompt
        else:
            messages = [Message("user", args.prompt)]
            if args.system:
                messages.insert(0, Message("system", args.system))
            fields["messages"] = messages
        request = validate(GenerateRequest, fields)
        out = sys.stdout
        ends_with_newline = True
        streamed = 0
        answer: list[str] = []
        _, pieces = generation(self._llm.manager, request)
        try:
            for piece in pieces:
                streamed += 1
                if reader is not None:  # the value, once complete and checked, is the output
                    answer.append(piece)
                    continue
                out.write(piece)
                out.flush()
                ends_with_newline = piece.endswith("\n")
        except KeyboardInterrupt:
            # An interrupt (Ctrl-C in `llmspell repl`, a notebook's stop button) lands deep in
            # llama_cpp; the cell shows one line (show_llmspell_error), not its ~60 frames.
            # Each piece the backends stream is a token (a held-back stop-string prefix can
            # join a few).
            raise Cancelled(
                f"generation stopped after {streamed} token{'s' if streamed != 1 else ''}",
                model=model,
            ) from None
        finally:
            pieces.close()
            if not ends_with_newline:
                out.write("\n")
                out.flush()
        return None if reader is None else read_answer("".join(answer), reader)


def _schema_value(text: str) -> Any:
    """``--schema``'s value: ``json``, inline JSON, or the name of a variable of the user's
    namespace (a schema dict or a pydantic model class)."""
    if text == "json":
        return text
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UsageError(f"%llm --schema: not valid JSON: {exc}") from None
    from IPython import get_ipython

    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else {}
    if text not in namespace:
        raise UsageError(
            f"%llm --schema: {text!r} is neither inline JSON nor a variable of the notebook"
        )
    return namespace[text]


LLMMagic.__call__.__doc__ = USAGE


def show_llmspell_error(
    shell: Any,
    etype: type[BaseException],
    value: BaseException,
    tb: TracebackType | None,
    tb_offset: int | None = None,
) -> list[str]:
    """IPython custom exception handler: one line ``ModelNotFound: ...`` instead of a traceback.

    ``_showtraceback`` is the shell's own display hook for errors: a plain shell prints the
    line, the kernel's shell publishes it as the cell's ``error`` output.
    """
    message = value.message if isinstance(value, LLMSpellError) else str(value)
    lines = [f"{etype.__name__}: {message}"]
    shell._showtraceback(etype, value, lines)
    return lines
