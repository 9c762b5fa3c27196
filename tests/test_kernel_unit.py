"""The kernel's pure layers, without a kernel: request validation, replies, the command runner
(with the scripted backend of the namespace tests), error mapping on the client side, and the
package surface."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import llmspell_kernel
from llmspell_kernel import commands
from llmspell_kernel.client import error_from_reply
from llmspell_kernel.protocol import (
    COMMANDS,
    error_reply,
    ok_reply,
    parse_request,
)
from llmspell_kernel.protocol.requests import GenerateRequest, ListRequest, PullRequest
from llmspell_kernel.protocol.results import GenerateResult, PsResult, PullResult
from providers import (
    Cancelled,
    ConfigError,
    GenerationOptions,
    InvalidRequest,
    LLMSpellError,
    Message,
    ModelNotFound,
    Progress,
    ProviderManager,
)
from tests.namespace_fixtures import GEMMA_ID, ScriptedBackend


def test_every_command_of_the_spec_is_known() -> None:
    assert set(COMMANDS) == {
        "list",
        "status",
        "info",
        "pull",
        "remove",
        "available",
        "import",
        "load",
        "unload",
        "ps",
        "generate",
        "cancel",
        "lease",
        "copy",
        "embed",
    }


def test_parse_keeps_given_fields_and_drops_nulls() -> None:
    request = parse_request(
        {"command": "pull", "model": "phi3", "force": True, "quantization": None}
    )
    assert request == PullRequest(model="phi3", force=True)
    assert request.content() == {"command": "pull", "model": "phi3", "force": True}
    assert parse_request({"command": "list", "backend": None}) == ListRequest()


def test_parse_generate_builds_messages_and_options() -> None:
    request = parse_request(
        {
            "command": "generate",
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ],
            "options": {"max_tokens": 8, "temperature": 0, "stop": "\n", "seed": None},
            "stream": True,
        }
    )
    assert isinstance(request, GenerateRequest)
    assert request.messages == [Message("system", "be brief"), Message("user", "hi")]
    assert request.options == GenerationOptions(max_tokens=8, temperature=0.0, stop=("\n",))
    assert request.stream is True
    prompt = parse_request({"command": "generate", "model": "m", "prompt": "x"})
    assert isinstance(prompt, GenerateRequest) and prompt.options == GenerationOptions()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "must be an object, not NoneType"),
        ({"command": None}, "no 'command'"),
        ({"command": "list", "backend": "  "}, "'backend' must not be empty"),
        ({"command": "list", "verbose": 1, "all": 2}, "unknown fields 'all', 'verbose'"),
        ({"command": "ps", "x": 1}, "(accepted: none)"),
        (
            {"command": "available", "recommended": 1},
            "'recommended' must be a boolean, not a number",
        ),
        ({"command": "generate", "model": "m", "prompt": "x", "options": {"stop": [1]}}, "'stop'"),
        ({"command": "generate", "model": "m", "prompt": "x", "stream": "yes"}, "'stream'"),
        ({"command": "generate", "model": "m", "messages": [{"role": "user"}]}, "'content'"),
        (
            {
                "command": "generate",
                "model": "m",
                "messages": [{"role": "user", "content": "", "x": 1}],
            },
            "unknown field 'x' of messages[0] (accepted: role, content)",
        ),
    ],
)
def test_parse_rejects(content: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(content)
    assert message in caught.value.message


def test_replies() -> None:
    assert ok_reply("ps", PsResult(models=[])) == {
        "status": "ok",
        "command": "ps",
        "models": [],
        "requests": [],
    }
    try:
        raise ModelNotFound("model 'x' is not installed", model="x", backend="llamacpp")
    except ModelNotFound as exc:
        reply = error_reply("info", exc)
    assert reply["ename"] == "ModelNotFound" and reply["evalue"] == "model 'x' is not installed"
    assert reply["model"] == "x" and reply["backend"] == "llamacpp"
    assert any("ModelNotFound" in line for line in reply["traceback"])
    foreign = error_reply(None, ZeroDivisionError("division by zero"))
    assert foreign["ename"] == "ZeroDivisionError" and foreign["command"] is None


def test_error_from_reply_maps_back_to_the_error_tree() -> None:
    exc = error_from_reply(
        {
            "ename": "ModelNotFound",
            "evalue": "gone",
            "model": "m",
            "backend": "ollama",
            "traceback": ["tb"],
        }
    )
    assert type(exc) is ModelNotFound and exc.message == "gone"
    assert exc.model == "m" and exc.backend == "ollama"
    assert isinstance(error_from_reply({"ename": "ConfigError", "evalue": "bad"}), ConfigError)
    foreign = error_from_reply({"ename": "ZeroDivisionError", "evalue": "division by zero"})
    assert type(foreign) is LLMSpellError
    assert foreign.message == "ZeroDivisionError: division by zero"


def manager_with(backend: ScriptedBackend) -> ProviderManager:
    return ProviderManager(backends={"llamacpp": backend})


def test_generate_streams_every_piece_and_returns_the_text() -> None:
    backend = ScriptedBackend()
    streamed: list[dict[str, Any]] = []
    op = commands.Operation(publish_stream=streamed.append)
    request = parse_request(
        {"command": "generate", "model": GEMMA_ID, "prompt": "x", "stream": True}
    )
    result = commands.run(manager_with(backend), request, op)
    assert isinstance(result, GenerateResult)
    assert result.text == "Hello, world!"
    assert [s["text"] for s in streamed] == backend.pieces
    assert result.model == f"{GEMMA_ID}@llamacpp"
    assert result.metrics.generated_tokens == 4
    assert backend.finished == 1


def test_a_cancelled_generation_closes_its_chunks() -> None:
    backend = ScriptedBackend()
    op = commands.Operation()
    op.publish_stream = lambda _: op.cancel.set()  # cancel as soon as text arrives
    request = parse_request(
        {"command": "generate", "model": GEMMA_ID, "prompt": "x", "stream": True}
    )
    with pytest.raises(Cancelled, match="interrupted"):
        commands.run(manager_with(backend), request, op)
    assert backend.closed == 1 and backend.finished == 0


def test_progress_is_throttled_and_cancellable() -> None:
    backend = ScriptedBackend()
    published: list[Progress] = []
    op = commands.Operation(publish_progress=published.append)
    result = commands.run(
        manager_with(backend), parse_request({"command": "pull", "model": "tiny@llamacpp"}), op
    )
    assert isinstance(result, PullResult) and result.bytes == 5_000_000
    phases = [p.phase for p in published]
    assert phases[0] == "resolving" and phases[-1] == "done"
    assert "downloading" in phases and "verifying" in phases
    assert len(published) < backend.pull_events / 10  # 5000 callbacks, a handful of messages

    op.cancel.set()
    with pytest.raises(Cancelled):
        op.progress(Progress("tiny", "downloading", 1, 2))


def test_package_surface_is_lazy_and_complete() -> None:
    for name in llmspell_kernel.__all__:
        assert getattr(llmspell_kernel, name) is not None
    code = (
        "import sys, llmspell_kernel\n"
        "heavy = ('ipykernel', 'zmq', 'jupyter_client', 'llama_cpp')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


BAD_OPTIONS = [
    {"top_p": 5},
    {"top_p": -1},
    {"temperature": -1},
    {"temperature": float("nan")},
    {"temperature": float("inf")},
    {"repeat_penalty": 0},
    {"min_p": 2},
    {"stop": [""]},
    {"stop": [1]},
    {"num_ctx": 4294967596},
    {"num_ctx": 0},
    {"max_tokens": True},
    {"seed": -5},
    {"top_k": "40"},
    {"warp": 9, "temprature": 1},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=str)
def test_the_wire_and_the_notebook_refuse_the_same_options_with_the_same_words(
    options: dict[str, Any],
) -> None:
    from providers.options import generation_options

    with pytest.raises(InvalidRequest) as wire:
        parse_request({"command": "generate", "model": "m", "prompt": "x", "options": options})
    with pytest.raises(InvalidRequest) as notebook:
        generation_options(options, what="Agent")
    assert wire.value.message.startswith("generate: ")
    assert notebook.value.message.startswith("Agent: ")
    assert wire.value.message.removeprefix("generate: ") == notebook.value.message.removeprefix(
        "Agent: "
    )
