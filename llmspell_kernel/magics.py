"""The ``%llm`` / ``%%llm`` magics and the one-line display of llmspell errors in cells."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import textwrap
import time
from dataclasses import dataclass, field, replace
from types import TracebackType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from IPython.core.error import UsageError

from providers import LLMSpellError, Message
from providers.options import OPTION_FIELDS, OPTION_NAMES, generation_options

from .commands import generation
from .interrupts import GenerationStopped
from .local_llm import LocalLLM
from .protocol.requests import GenerateRequest, validate
from .schemas import output_format, read_answer

NO_MODEL_HINT = "pass %llm -m SPEC or LocalLLM.set_default_model(...)"


def _scalar_types(annotation: Any) -> set[Any]:
    """The plain types in an annotation (``StrictFloat | None`` → ``{float, NoneType}``)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _scalar_types(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_scalar_types(arg) for arg in get_args(annotation)))
    return {annotation}


FORMATS = ("text", "markdown", "json")
_TYPED = {
    name: kinds
    for name, field in OPTION_FIELDS.items()
    if (kinds := _scalar_types(field.annotation) & {int, float})
}
"""The generation options given as numbers, and their type (int or float)."""
_OPTION_FLAGS = {
    f"--{name.replace('_', '-')}": name for name in OPTION_NAMES if name not in ("format", "stop")
}
_FLAGS = {
    "-m": "model",
    "--model": "model",
    "--system": "system",
    "--schema": "schema",
    "--format": "format",
    "-t": "temperature",
    "--stop": "stop",
    "-o": "option",
    "--option": "option",
    **_OPTION_FLAGS,
}
_SWITCHES = {"--raw": "raw", "-h": "help", "--help": "help"}
_OTHER_FLAGS = textwrap.fill(
    " ".join(sorted(set(_OPTION_FLAGS) - {"--temperature"})),
    92,
    initial_indent="  ",
    subsequent_indent="  ",
    break_on_hyphens=False,
)
"""Options without a value."""

USAGE = f"""\
%llm [OPTIONS] PROMPT
%%llm [OPTIONS]
PROMPT (the cell body)

Generates an answer with a local model and shows it as it is produced; Stop (interrupt)
ends it with one line, keeping the text so far.

  -m, --model SPEC     the model (default: LocalLLM.set_default_model(...) or $LLMSPELL_MODEL)
  --system TEXT        a system prompt
  --raw                continue the prompt as plain text, without the chat template
                       (for base models)
  --format FORMAT      text (the default), markdown (streamed as text, then rendered as
                       Markdown), or json (the answer is a JSON object; the cell's value is
                       it, parsed)
  --schema S           the answer is JSON satisfying S: inline JSON Schema, 'json', or the name
                       of a variable holding a schema dict or a pydantic model class; the
                       cell's value is the answer, parsed
  -t, --temperature T  sampling temperature (0: greedy)
  --stop TEXT          stop at this text (repeatable)
  -o, --option KEY=VALUE
                       any generation option (repeatable), as `llmspell prompt -o`
{_OTHER_FLAGS}
                       the generation options of `llmspell prompt`, each taking a value
  -h, --help           this help

Quote values with spaces; put -- before a prompt that starts with '-'."""


@dataclass
class MagicArgs:
    model: str | None = None
    system: str | None = None
    schema: str | None = None
    format: str = "text"
    raw: bool = False
    help: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """Generation options as typed (checked by :func:`providers.options.generation_options`)."""
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
        name = _FLAGS.get(flag)
        if name is None:
            raise UsageError(f"unknown option {flag!r} for %llm (%llm --help lists them)")
        if value is None:
            if not rest.strip():
                raise UsageError(f"option {flag} needs a value\n{USAGE}")
            value, rest = _take_token(rest)
        if name == "option" and "=" not in value and rest.strip():  # -o KEY VALUE
            key = value
            value, rest = _take_token(rest)
            value = f"{key}={value}"
        _set_option(args, name, flag, value)
    if args.help:
        return args
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


def _set_option(args: MagicArgs, name: str, flag: str, value: str) -> None:
    if name in ("model", "system", "schema"):
        setattr(args, name, value)
    elif name == "format":
        if value not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {value!r}")
        args.format = value
    elif name == "stop":
        args.options.setdefault("stop", []).append(value)
    elif name == "option":
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} needs KEY=VALUE, not {value!r}")
        args.options[key.strip()] = _typed(key.strip(), text, flag)
    else:
        args.options[name] = _typed(name, value, flag)


def _typed(name: str, text: str, flag: str) -> Any:
    """A value as typed: a number for the numeric options (a usage error naming ``flag`` if
    it is not one), else JSON when it parses as JSON (``true``, lists), else the text."""
    kinds = _TYPED.get(name)
    if kinds is not None:
        kind = float if float in kinds else int
        try:
            return kind(text)
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise UsageError(f"{flag} must be {what}, not {text!r}") from None
    try:
        return json.loads(text)
    except ValueError:
        return text


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
        if args.help:
            print(USAGE)
            return None
        model = self._llm.require_model(args.model, NO_MODEL_HINT)
        options = generation_options(args.options, what="%llm")
        reader = None
        if args.format == "json" and args.schema is not None:
            raise UsageError("%llm: give --format json or --schema, not both")
        schema = "json" if args.format == "json" else args.schema
        if schema is not None:
            output, reader = output_format(_schema_value(schema), "%llm --schema")
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
        if reader is not None:  # the value, once complete and checked, is the output
            view: AnswerView = Collected()
        elif args.format == "markdown":
            view = MarkdownView()
        else:
            view = StreamedText(sys.stdout)
        _, pieces = generation(self._llm.manager, request)
        streamed = 0
        try:
            for piece in pieces:
                streamed += 1
                view.add(piece)
        except KeyboardInterrupt:
            # An interrupt (Ctrl-C in `llmspell repl`, a notebook's stop button) lands deep in
            # the wait for the model; the cell shows one line, the text so far stays. Each
            # piece is a token (a held-back stop-string prefix can join a few).
            raise GenerationStopped(streamed, model) from None
        finally:
            pieces.close()
            view.end()
        return None if reader is None else read_answer(view.text(), reader)


class AnswerView:
    """Where ``%llm`` puts the answer as it comes."""

    def __init__(self) -> None:
        self._pieces: list[str] = []

    def add(self, piece: str) -> None:
        self._pieces.append(piece)

    def end(self) -> None:
        """The answer is complete, or stopped."""

    def text(self) -> str:
        return "".join(self._pieces)


class Collected(AnswerView):
    """Kept, not shown: a JSON answer is the cell's value once it is complete and checked."""


class StreamedText(AnswerView):
    """Written to the cell's stdout piece by piece."""

    def __init__(self, out: Any) -> None:
        super().__init__()
        self._out = out

    def add(self, piece: str) -> None:
        super().add(piece)
        self._out.write(piece)
        self._out.flush()

    def end(self) -> None:
        if self._pieces and not self._pieces[-1].endswith("\n"):
            self._out.write("\n")
            self._out.flush()


class MarkdownView(AnswerView):
    """One output that grows as text (updated at most every ``interval`` s) and is rendered as
    Markdown once the answer is complete (or stopped)."""

    def __init__(self, interval: float = 0.1) -> None:
        from IPython.display import display

        super().__init__()
        self._interval = interval
        self._shown = 0.0
        self._handle: Any = display({"text/plain": ""}, raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def add(self, piece: str) -> None:
        super().add(piece)
        now = time.monotonic()
        if now - self._shown >= self._interval:
            self._shown = now
            self._update({"text/plain": self.text()})

    def end(self) -> None:
        text = self.text()
        self._update({"text/markdown": text, "text/plain": text})

    def _update(self, data: dict[str, str]) -> None:
        if self._handle is not None:
            self._handle.update(data, raw=True)


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
    lines = [message if isinstance(value, GenerationStopped) else f"{etype.__name__}: {message}"]
    shell._showtraceback(etype, value, lines)
    return lines
