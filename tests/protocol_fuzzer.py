"""A seeded generator of malformed and hostile ``model_request`` contents.

Every :class:`Case` says what the kernel must answer, decided by how the case was built (not
by asking the kernel's own validator): ``expect`` is the set of acceptable ``ename`` values of
an error reply, or ``OK`` for a request that is valid and harmless (``list``, ``status``...).
``raw`` cases carry content already serialized as JSON text (for contents that are not
objects, or that hold lone surrogates, which only escaped JSON can carry).

The kernel under test is expected to run with: a llamacpp store that holds none of the names
used here, ``default_backend = "llamacpp"``, Ollama down (``BackendUnavailable``), and a
Hugging Face Hub stand-in with no repositories (so a pull of a well-formed spec is
``ModelNotFound``). Paths point into ``outside`` (a sentinel tree the test snapshots) and at
system files; nothing here can name a model that exists.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OK = "ok"
INVALID = frozenset({"InvalidRequest"})
BAD_SPEC = frozenset({"InvalidModelSpec"})
MISSING = frozenset({"ModelNotFound"})
DIRECTORY = frozenset({"ModelLoadError"})
"""An import of a directory: "<path> is a directory, not a GGUF model file"."""
OLLAMA_DOWN = frozenset({"BackendUnavailable"})

COMMANDS: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    # command: (required fields, optional fields), as SPEC §5 describes them
    "list": ({}, {"backend": str}),
    "status": ({}, {"backend": str}),
    "info": ({"model": str}, {}),
    "pull": ({"model": str}, {"force": bool, "quantization": str}),
    "remove": ({"model": str}, {}),
    "available": ({}, {"backend": str, "recommended": bool}),
    "import": ({"path": str}, {"name": str}),
    "load": ({"model": str}, {}),
    "unload": ({"model": str}, {}),
    "ps": ({}, {}),
    "generate": (
        {"model": str},
        {"prompt": str, "messages": list, "options": dict, "stream": bool},
    ),
}
MODEL_COMMANDS = ("info", "pull", "remove", "load", "unload", "generate")
HARMLESS = ("list", "status", "available", "ps")
OPTIONS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens")


def valid_option(rng: random.Random, name: str) -> float | int:
    """A value within the option's range (providers.options.GenerationOptions)."""
    if name == "temperature":
        return round(rng.uniform(0, 2), 3)
    if name == "top_p":
        return round(rng.uniform(0.01, 1), 3)
    if name == "min_p":
        return round(rng.uniform(0, 1), 3)
    if name == "repeat_penalty":
        return round(rng.uniform(0.5, 2), 3)
    if name == "seed":
        return rng.randrange(0, 2**32)
    return rng.randrange(1, 100)  # top_k, max_tokens


MEGABYTE = 1 << 20
FULLWIDTH = "\uff4d\uff4f\uff44\uff45\uff4c"  # "model" in fullwidth letters


@dataclass(frozen=True)
class Case:
    category: str
    content: Any
    expect: frozenset[str] | str
    raw: bool = False
    """``content`` is JSON text, sent as the already-packed content frame."""

    def describe(self) -> str:
        text = self.content if self.raw else json.dumps(self.content, default=str)
        return f"[{self.category}] {text[:200]}"


class ProtocolFuzzer:
    """``ProtocolFuzzer(seed, outside).cases(n)`` yields ``n`` cases, the same for a seed."""

    def __init__(self, seed: int, outside: Path) -> None:
        self.rng = random.Random(seed)
        self.outside = outside
        self.huge_budget = 120  # 1 MB strings are costly to echo: cap how many are made
        self._builders: list[tuple[float, Callable[[], Case]]] = [
            (6, self.no_command),
            (5, self.command_wrong_type),
            (8, self.unknown_command),
            (4, self.not_an_object),
            (16, self.wrong_field_type),
            (6, self.missing_required),
            (7, self.unknown_field),
            (4, self.empty_string),
            (12, self.hostile_spec),
            (5, self.hostile_backend),
            (8, self.unknown_model),
            (8, self.hostile_import),
            (10, self.bad_generate),
            (3, self.lone_surrogate),
            (3, self.harmless),
        ]

    def cases(self, count: int) -> Iterator[Case]:
        weights = [w for w, _ in self._builders]
        builders = [b for _, b in self._builders]
        for _ in range(count):
            yield self.rng.choices(builders, weights)[0]()

    # Values ---------------------------------------------------------------------------------

    def text(self, *, allow_huge: bool = True) -> str:
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0 and allow_huge and self.huge_budget > 0:
            self.huge_budget -= 1
            return rng.choice(string.ascii_letters) * MEGABYTE
        if kind == 1:
            return "".join(chr(rng.randrange(0x20)) for _ in range(rng.randrange(1, 12)))
        if kind == 2:
            return "".join(chr(rng.randrange(0xA0, 0xD7FF)) for _ in range(rng.randrange(1, 40)))
        if kind == 3:
            return rng.choice(["💥", "模型", FULLWIDTH, "e\u0301", "\u202eevil", "\ufeffx"])
        if kind == 4:
            return rng.choice(["../../etc/passwd", "/etc/shadow", "a\x00b", "..", "~", "$HOME"])
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 60)))

    def junk(self, depth: int = 0) -> Any:
        """Any JSON value: scalars, long lists, wide or deep objects."""
        rng = self.rng
        kind = rng.randrange(10 if depth < 4 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False])
        if kind == 2:
            return rng.choice([0, -1, 1, 2**53, -(2**63), 10**30, rng.randrange(-1000, 1000)])
        if kind == 3:
            return rng.choice([0.0, -0.5, 1e308, -1e-308, rng.random()])
        if kind in (4, 5):
            return self.text(allow_huge=depth == 0)
        if kind == 6:
            return [self.junk(depth + 1) for _ in range(rng.randrange(0, 6))]
        if kind == 7:
            return {self.text(allow_huge=False): self.junk(depth + 1) for _ in range(3)}
        if kind == 8:
            return self.nested(rng.randrange(20, 400))
        return [rng.randrange(10) for _ in range(rng.randrange(100, 5000))]

    def nested(self, depth: int) -> Any:
        value: Any = "bottom"
        for level in range(depth):
            value = [value] if level % 2 else {"k": value}
        return value

    def wrong_value(self, kind: type) -> Any:
        """A non-null JSON value that is not of ``kind`` (bool is not a number, nor 0/1 a bool)."""
        while True:
            value = self.junk()
            if value is None:
                continue
            if kind is bool and not isinstance(value, bool):
                return value
            if kind is str and not isinstance(value, str):
                return value
            if kind is list and not isinstance(value, list):
                return value
            if kind is dict and not isinstance(value, dict):
                return value

    def missing_name(self) -> str:
        return f"no-such-model-{self.rng.randrange(10**9)}"

    def valid_value(self, command: str, name: str) -> Any:
        """A well-typed value for a field, naming nothing that exists."""
        rng = self.rng
        if name == "model":
            return self.missing_name()
        if name == "path":
            return str(self.outside / "no-such-file.gguf")
        if name == "name":
            return self.missing_name()
        if name == "backend":
            return rng.choice(["llamacpp", "candle", "LlamaCpp"])
        if name in ("force", "recommended", "stream"):
            return rng.choice([True, False])
        if name == "quantization":
            return rng.choice(["Q4_K_M", "q8_0"])
        if name == "prompt":
            return "hello"
        if name == "messages":
            return [{"role": "user", "content": "hi"}]
        if name == "options":
            return {"max_tokens": 4}
        raise AssertionError(name)

    def base(self, command: str) -> dict[str, Any]:
        """A well-formed request for ``command`` (an unknown model where one is needed)."""
        required, _ = COMMANDS[command]
        content: dict[str, Any] = {"command": command}
        for name in required:
            content[name] = self.valid_value(command, name)
        if command == "generate":
            content["prompt"] = "hello"
        return content

    # Builders -------------------------------------------------------------------------------

    def no_command(self) -> Case:
        content = {self.text(allow_huge=False): self.junk() for _ in range(self.rng.randrange(4))}
        content.pop("command", None)
        if self.rng.random() < 0.3:
            content["command"] = None
        return Case("no-command", content, INVALID)

    def command_wrong_type(self) -> Case:
        return Case("command-wrong-type", {"command": self.wrong_value(str)}, INVALID)

    def unknown_command(self) -> Case:
        rng = self.rng
        command = rng.choice(
            [
                self.text(),
                rng.choice(list(COMMANDS)).upper(),
                " " + rng.choice(list(COMMANDS)),
                rng.choice(list(COMMANDS)) + "\x00",
                "__init__",
                "_HANDLERS",
                "exec",
                "shutdown",
                "../list",
            ]
        )
        if command in COMMANDS:
            command += "?"
        content = {"command": command, "model": self.missing_name()}
        return Case("unknown-command", content, INVALID)

    def not_an_object(self) -> Case:
        value = self.rng.choice(
            [[], ["list"], [{"command": "list"}], "list", 0, 3.5, True, False, None]
        )
        if value is None:
            return Case("not-an-object", "null", INVALID, raw=True)
        return Case("not-an-object", json.dumps(value), INVALID, raw=True)

    def wrong_field_type(self) -> Case:
        command = self.rng.choice([c for c, (r, o) in COMMANDS.items() if r or o])
        required, optional = COMMANDS[command]
        fields = {**required, **optional}
        name = self.rng.choice(list(fields))
        content = self.base(command)
        content[name] = self.wrong_value(fields[name])
        return Case(f"wrong-type:{command}.{name}", content, INVALID)

    def missing_required(self) -> Case:
        command = self.rng.choice([c for c, (r, _) in COMMANDS.items() if r])
        content = self.base(command)
        name = self.rng.choice(list(COMMANDS[command][0]))
        if self.rng.random() < 0.5:
            del content[name]
        else:
            content[name] = None
        return Case(f"missing:{command}.{name}", content, INVALID)

    def unknown_field(self) -> Case:
        command = self.rng.choice(list(COMMANDS))
        content = self.base(command)
        required, optional = COMMANDS[command]
        key = self.rng.choice(
            [self.text(), "Model", "model ", "__proto__", "constructor", "path", "options"]
        )
        if key in required or key in optional or key == "command":
            key += "_"
        content[key] = self.junk()
        if content[key] is None:
            content[key] = 0
        return Case(f"unknown-field:{command}", content, INVALID)

    def empty_string(self) -> Case:
        command = self.rng.choice([c for c, (r, o) in COMMANDS.items() if str in {*r.values()}])
        content = self.base(command)
        required, _ = COMMANDS[command]
        name = self.rng.choice([n for n, t in required.items() if t is str])
        content[name] = self.rng.choice(["", " ", "\t", "\n \r"])
        return Case(f"empty:{command}.{name}", content, INVALID)

    def hostile_spec(self) -> Case:
        rng = self.rng
        command = rng.choice(MODEL_COMMANDS)
        content = self.base(command)
        outside = str(self.outside)
        content["model"] = rng.choice(
            [
                "../../etc/passwd",
                "../" * rng.randrange(1, 9) + "outside/secret.txt",
                "/etc/passwd",
                outside + "/secret.txt",
                "models/../../" + outside,
                "a\x00b",
                "gemma\x00@llamacpp",
                "x\ny",
                "\x1b[31mred",
                "..",
                "...",
                "./x",
                "x/..",
                "x:../../y",
                "x:..",
                "hf:../x",
                "hf:org/../x",
                "hf:org/repo/extra",
                "hf:/etc/passwd",
                "hf:org/repo:../../x",
                "hf.co/../../x",
                "@llamacpp",
                "x@",
                "x@nowhere",
                "x@../llamacpp",
                "C:\\Windows\\win.ini",
                "\\\\server\\share",
                "file:///etc/passwd",
                "~/.ssh/id_rsa",
                "$(touch pwned)",
                "`id`",
                "x;rm -rf /",
                "💥",
                FULLWIDTH,
                "-x",
                "_x",
                "x" * (600 + rng.randrange(4000)),
                rng.choice(string.ascii_letters) * MEGABYTE,
            ]
        )
        return Case(f"hostile-spec:{command}", content, BAD_SPEC)

    def hostile_backend(self) -> Case:
        command = self.rng.choice(["list", "status", "available"])
        backend = self.rng.choice(
            ["nowhere", "../llamacpp", "llamacpp\x00", "ollama/..", "💥", "*", "%s", "x" * 2000]
        )
        return Case(
            f"hostile-backend:{command}", {"command": command, "backend": backend}, BAD_SPEC
        )

    def unknown_model(self) -> Case:
        rng = self.rng
        command = rng.choice(MODEL_COMMANDS)
        content = self.base(command)
        name = self.missing_name()
        variant = rng.choice(["", ":q4", ":Q4_K_M", ":7b:q4", ":x.y+z"])
        if command == "pull" and rng.random() < 0.5:
            content["model"] = f"hf:fuzz-org/{name}{variant}"
            return Case(f"unknown-model:{command}", content, MISSING)
        if rng.random() < 0.25:
            content["model"] = f"{name}{variant}@ollama"
            return Case(f"unknown-model:{command}@ollama", content, OLLAMA_DOWN)
        suffix = rng.choice(["", "@llamacpp", "@candle", "@LLAMACPP", "@gguf"])
        content["model"] = f"{rng.choice(['', 'local/', 'a/b/'])}{name}{variant}{suffix}"
        if command == "generate":
            content.pop("prompt")
            if rng.random() < 0.5:
                content["prompt"] = self.text()
            else:
                content["messages"] = [
                    {"role": rng.choice(["system", "user", "assistant"]), "content": self.text()}
                    for _ in range(rng.randrange(1, 4))
                ]
            name = rng.choice(OPTIONS)
            content["options"] = {name: valid_option(rng, name)}
            content["stream"] = rng.choice([True, False])
        return Case(f"unknown-model:{command}", content, MISSING)

    def hostile_import(self) -> Case:
        """Paths to nothing, to directories, devices, system and sentinel files; bad names."""
        rng = self.rng
        outside = self.outside
        name_kind = rng.randrange(3)
        paths = {
            # path: what an import with a good name must answer
            "../../etc/passwd": MISSING,  # relative to the kernel's cwd: nothing there
            "../" * 3 + "secret.txt": frozenset({"ModelLoadError"}),  # cwd is outside/a/b/c
            "/etc/passwd": frozenset({"ModelLoadError"}),
            "/etc/shadow": frozenset({"ModelLoadError"}),
            "/proc/self/environ": frozenset({"ModelLoadError"}),
            "/proc/self/mem": frozenset({"ModelLoadError"}),
            "/dev/zero": MISSING,
            "/dev/null": MISSING,
            "/": DIRECTORY,
            "~": DIRECTORY,
            "~root/.bashrc": frozenset({"ModelLoadError", "ModelNotFound"}),
            str(outside): DIRECTORY,
            str(outside / "secret.txt"): frozenset({"ModelLoadError"}),
            str(outside / "fake.gguf"): frozenset({"ModelLoadError"}),
            str(outside / "fifo"): MISSING,
            str(outside / "link-to-secret"): frozenset({"ModelLoadError"}),
            str(outside / "nested" / ".." / "secret.txt"): frozenset({"ModelLoadError"}),
            "a\x00b.gguf": MISSING,
            "x" * 5000 + ".gguf": frozenset({"ModelLoadError"}),  # ENAMETOOLONG
        }
        path = rng.choice(list(paths))
        content: dict[str, Any] = {"command": "import", "path": path}
        if name_kind == 0:
            content["name"] = rng.choice(
                [
                    "../../outside/x",
                    "/abs",
                    "a\x00b",
                    "x@ollama",
                    "org/x",
                    "hf:org/repo:Q4",
                    "..",
                    "x:../y",
                    "💥",
                ]
            )
            return Case("import:bad-name", content, BAD_SPEC)
        if name_kind == 1:
            content["name"] = self.missing_name()
            return Case("import:hostile-path", content, paths[path])
        # No name: the id is derived from the file name, which may itself be unusable.
        return Case("import:derived-name", content, paths[path] | BAD_SPEC)

    def bad_generate(self) -> Case:
        rng = self.rng
        content: dict[str, Any] = {"command": "generate", "model": self.missing_name()}
        kind = rng.randrange(9)
        if kind == 0:
            pass  # neither prompt nor messages
        elif kind == 1:
            content["prompt"] = "x"
            content["messages"] = [{"role": "user", "content": "x"}]
        elif kind == 2:
            content["messages"] = []
        elif kind == 3:
            content["messages"] = [self.wrong_value(dict) for _ in range(rng.randrange(1, 4))]
        elif kind == 4:
            content["messages"] = [
                {"role": rng.choice(["god", "", "USER", None, 7, "tool"]), "content": "x"}
            ]
        elif kind == 5:
            content["messages"] = [{"role": "user", "content": self.wrong_value(str)}]
        elif kind == 6:
            content["messages"] = [{"role": "user", "content": "x", self.text(): 1}]
        elif kind == 7:
            content["prompt"] = "x"
            content["options"] = {self.text(allow_huge=False) + "_": self.junk()}
        else:
            content["prompt"] = "x"
            name = rng.choice([*OPTIONS, "stop", "num_ctx"])
            if name in ("max_tokens", "num_ctx") and rng.random() < 0.4:
                value: Any = rng.choice([0, -1, -(2**40)])
            elif name == "stop":
                value = rng.choice([7, [1, 2], {"a": "b"}, ["ok", None], True])
            elif name in ("top_k", "seed", "max_tokens", "num_ctx"):
                value = rng.choice(["9", 1.5, True, [], {}, "x" * 100])
            else:
                value = rng.choice(["0.5", True, [], {}, "nan"])
            content["options"] = {name: value}
        return Case(f"bad-generate:{kind}", content, INVALID)

    def lone_surrogate(self) -> Case:
        """Lone UTF-16 surrogates: valid escaped JSON, not encodable as UTF-8."""
        rng = self.rng
        bad = chr(rng.randrange(0xD800, 0xE000))
        content: dict[str, Any] = rng.choice(
            [
                {"command": "x" + bad},
                {"command": "info", "model": bad},
                {"command": "list", "backend": bad},
                {"command": "import", "path": bad, "name": "x"},
                {"command": "ps", bad: 1},
                {"command": "generate", "model": "x", "prompt": "y", "options": {bad: 1}},
            ]
        )
        expect = BAD_SPEC if content["command"] in ("info", "list") else INVALID
        if content["command"] == "import":
            expect = MISSING
        return Case("lone-surrogate", json.dumps(content, ensure_ascii=True), expect, raw=True)

    def harmless(self) -> Case:
        command = self.rng.choice(HARMLESS)
        content: dict[str, Any] = {"command": command}
        _, optional = COMMANDS[command]
        for name in optional:
            if self.rng.random() < 0.5:
                content[name] = self.rng.choice([None, self.valid_value(command, name)])
        return Case(f"valid:{command}", content, OK)
