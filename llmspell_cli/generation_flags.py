"""The generation options of ``prompt`` and ``chat``: a flag for each common option of the
protocol, and ``-o KEY=VALUE`` for any of them (``llm``'s ``-o``).

The flags only collect what was typed; :func:`providers.options.generation_options` is the one
check of names, types and ranges, the same as for a ``generate`` request over the wire.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from providers.options import GenerationOptions

Command = TypeVar("Command", bound=Callable[..., Any])

_FLAGS: tuple[tuple[str, Any, tuple[str, ...], str], ...] = (
    ("max_tokens", int, ("--max-tokens",), "Stop after this many tokens."),
    ("temperature", float, ("--temperature", "-t"), "Sampling temperature (0: greedy)."),
    ("top_p", float, ("--top-p",), "Nucleus sampling: keep the tokens of this probability mass."),
    ("top_k", int, ("--top-k",), "Sample from the K most likely tokens (0: all)."),
    ("min_p", float, ("--min-p",), "Drop tokens below this fraction of the likeliest one."),
    ("repeat_penalty", float, ("--repeat-penalty",), "Penalty for repeated tokens (1: none)."),
    ("num_ctx", int, ("--num-ctx",), "Context window in tokens (the model is loaded with it)."),
    ("seed", int, ("--seed",), "Random seed (the same seed and options: the same text)."),
)
_STOP = "stop"
_OPTION = "option"
OPTION_FLAGS = ("-o", "--option")
COMMANDS = ("prompt", "chat")


def _parameters() -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            name,
            keyword,
            default=None,
            annotation=Annotated[kind | None, typer.Option(*flags, help=help_text)],
        )
        for name, kind, flags, help_text in _FLAGS
    ]
    params.append(
        inspect.Parameter(
            _STOP,
            keyword,
            default=None,
            annotation=Annotated[
                list[str] | None,
                typer.Option("--stop", metavar="TEXT", help="Stop at this text (repeatable)."),
            ],
        )
    )
    params.append(
        inspect.Parameter(
            _OPTION,
            keyword,
            default=None,
            annotation=Annotated[
                list[str] | None,
                typer.Option(
                    *OPTION_FLAGS,
                    metavar="KEY=VALUE",
                    help="Any generation option: -o KEY VALUE or -o KEY=VALUE, e.g."
                    " -o frequency_penalty 0.5 (repeatable).",
                ),
            ],
        )
    )
    return params


def with_generation_flags(command: Command) -> Command:
    """``command`` with the generation flags added to its command line; it is called with
    ``options`` (:class:`~providers.options.GenerationOptions`) in their place."""
    signature = inspect.signature(command)
    kept = [
        p.replace(annotation=_evaluated(p.annotation, command))
        for p in signature.parameters.values()
        if p.name != "options"  # its type is imported for type checking only
    ]
    names = [name for name, *_ in _FLAGS] + [_STOP, _OPTION]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name, None) for name in names}
        return command(*args, options=options_from_flags(flags), **kwargs)

    parameters = [*kept, *_parameters()]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]


def _evaluated(annotation: Any, command: Callable[..., Any]) -> Any:
    """A parameter's annotation; a string one (``from __future__ import annotations``) is
    evaluated in the command's module, as typer would."""
    if isinstance(annotation, str):
        return eval(annotation, command.__globals__)  # the module's own source, as typing does
    return annotation


def join_option_pairs(args: list[str], value_options: Iterable[str] = ()) -> list[str]:
    """``-o KEY VALUE`` (``llm``'s spelling) as ``-o KEY=VALUE`` in the arguments of a ``prompt``
    or ``chat`` command. ``value_options`` are the global options that take a value (so that
    the command word can be found after them); before the command, ``-o`` is ``--output``."""
    takes_value = set(value_options)
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in takes_value else 1
    if i >= len(args) or args[i] not in COMMANDS:
        return args
    joined, i = args[: i + 1], i + 1
    while i < len(args):
        word = args[i]
        if word == "--":
            joined += args[i:]
            break
        if word in OPTION_FLAGS and i + 2 < len(args):
            key = args[i + 1]
            if "=" not in key and not key.startswith("-"):
                joined += [word, f"{key}={args[i + 2]}"]
                i += 3
                continue
        joined.append(word)
        i += 1
    return joined


def options_from_flags(flags: dict[str, Any]) -> GenerationOptions:
    """The options the flags give (``-o KEY VALUE`` arrives joined: :func:`join_option_pairs`);
    ``-o`` values are JSON when they parse as JSON (numbers,
    ``true``, lists), else text. An explicit flag wins over ``-o`` for the same option."""
    values: dict[str, Any] = {}
    for item in flags.pop(_OPTION, None) or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="-o")
        values[key.strip()] = _value(text)
    _check(values, "-o")
    stop = flags.pop(_STOP, None)
    if stop:
        values[_STOP] = list(stop)
    hints = {name: hint[0] for name, _, hint, _ in _FLAGS} | {_STOP: "--stop"}
    for name, value in flags.items():
        if value is not None:
            _check({name: value}, hints[name])
            values[name] = value
    return _check(values, "options")


def with_output_format(
    options: GenerationOptions, output_format: str | None, schema: str | None
) -> GenerationOptions:
    """``options`` with the ``format`` that ``--format json`` or ``--schema JSON_OR_FILE`` (inline
    JSON, else a file of it) asks for; a usage error naming the flag when it is wrong."""
    if output_format is not None and schema is not None:
        raise typer.BadParameter("give --format json or --schema, not both", param_hint="--schema")
    if output_format is not None:
        if output_format != "json":
            raise typer.BadParameter(
                f"the only format is 'json', not {output_format!r} (--schema for a JSON Schema)",
                param_hint="--format",
            )
        value: Any = "json"
    elif schema is not None:
        value = _schema(schema)
    else:
        return options
    hint = "--format" if schema is None else "--schema"
    return _check({**options.to_dict(), "format": value}, hint)


def _schema(text: str) -> Any:
    """``--schema``'s value: inline JSON, or the JSON in the file it names."""
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(
                f"{text!r} is neither inline JSON nor a readable file ({exc.strerror})",
                param_hint="--schema",
            ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--schema") from None


def _check(values: dict[str, Any], hint: str) -> GenerationOptions:
    """``values`` as options; a usage error naming ``hint`` (the flag) when they are wrong."""
    from providers.errors import InvalidRequest
    from providers.options import generation_options  # pydantic: not on `--help`'s path

    try:
        return generation_options(values, what=hint)
    except InvalidRequest as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"{hint}: "), param_hint=hint) from None


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
