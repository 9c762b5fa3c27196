"""Reading the examples out of docs/*.md (the convention is described in docs/index.md).

- A ```` ```console ```` block holds commands (lines starting with ``$ ``), each followed by
  what it printed; an output line starting with ``error:`` means the command fails (exit 1).
- ``<!-- not run: REASON -->`` right before a block: its commands are not run, for REASON.
- ``<!-- env: NAME=VALUE ... -->`` right before a block: variables for its commands.
- ``<!-- file: NAME -->`` right before a block: its text is written to NAME in the working
  directory (before the commands after it run).
- Commands never appear in ```` ```bash ````/```` ```sh ```` blocks (they would be missed).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
_FENCE = re.compile(r"^```(\S*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(not run|env|file):\s*(.*?)\s*-->\s*$")
SHELL_LANGUAGES = ("bash", "sh", "shell", "zsh")


@dataclass
class Block:
    doc: str
    line: int
    language: str
    text: str
    not_run: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    file: str | None = None


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    output: tuple[str, ...]
    env: dict[str, str]

    @property
    def fails(self) -> bool:
        return any(line.startswith("error:") for line in self.output)

    @property
    def error(self) -> str | None:
        return next((line for line in self.output if line.startswith("error:")), None)


class ConventionError(ValueError):
    """A doc that does not follow the convention."""


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one page, with the directives that precede them."""
    found: list[Block] = []
    pending: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        fence = _FENCE.match(line)
        if directive:
            pending[directive.group(1)] = directive.group(2)
        elif fence:
            start = index
            index += 1
            body: list[str] = []
            while index < len(lines) and lines[index].rstrip() != "```":
                body.append(lines[index])
                index += 1
            if index == len(lines):
                raise ConventionError(f"{path.name}:{start + 1}: unclosed code block")
            block = Block(path.name, start + 1, fence.group(1), "\n".join(body) + "\n")
            if "not run" in pending:
                block.not_run = pending["not run"]
            if "env" in pending:
                block.env = _env(path.name, start, pending["env"])
            if "file" in pending:
                block.file = pending["file"]
            pending = {}
            found.append(block)
        elif line.strip() and pending:
            raise ConventionError(
                f"{path.name}:{index + 1}: a directive must be right before a code block"
            )
        index += 1
    return found


def _env(doc: str, line: int, text: str) -> dict[str, str]:
    env = {}
    for word in shlex.split(text):
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ConventionError(f"{doc}:{line}: env directive needs NAME=VALUE, got {word!r}")
        env[name] = value
    return env


def commands(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block, each with the output lines after it."""
    result: list[Command] = []
    current: tuple[int, str] | None = None
    output: list[str] = []
    for offset, line in enumerate(block.text.splitlines(), start=1):
        if line.startswith("$ "):
            if current is not None:
                result.append(_command(block, current, output))
            current, output = (block.line + offset, line[2:]), []
        elif current is None:
            raise ConventionError(f"{block.doc}:{block.line + offset}: output before a command")
        else:
            output.append(line)
    if current is not None:
        result.append(_command(block, current, output))
    return result


def _command(block: Block, where: tuple[int, str], output: list[str]) -> Command:
    return Command(block.doc, where[0], where[1], tuple(output), dict(block.env))


def check_convention(block: Block) -> None:
    """Raises :class:`ConventionError` for a block that breaks the convention."""
    where = f"{block.doc}:{block.line}"
    if block.language == "console":
        if not commands(block):
            raise ConventionError(f"{where}: a console block without a '$ ' command")
        if block.not_run is not None and not block.not_run.strip():
            raise ConventionError(f"{where}: 'not run' needs a reason")
        if block.file is not None:
            raise ConventionError(f"{where}: a console block cannot be a file")
    elif block.language in SHELL_LANGUAGES:
        if any(line.startswith("$ ") for line in block.text.splitlines()):
            raise ConventionError(f"{where}: commands go in console blocks, not {block.language}")
    if block.file is not None:
        name = Path(block.file)
        if name.is_absolute() or ".." in name.parts or not block.file.strip():
            raise ConventionError(f"{where}: file name {block.file!r} must be relative")
    if (block.env or block.not_run is not None) and block.language != "console":
        raise ConventionError(f"{where}: env/not run apply to console blocks only")


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))
