"""Structured output (``format``): the one check of a schema, llguidance's constraint with the
real Gemma 3 270M (every keyword of the issue enforced, even when sampling runs wild), the check
of every answer before it is reported as ok, the Ollama and OpenAI wire formats, the CLI's
``--schema``/``--format json`` on stdout, and the notebook API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field

from llmspell_kernel.protocol.requests import parse_request
from providers import Config, GenerationOptions, Message, ModelSpec, ProviderManager
from providers.errors import GenerationError, InvalidRequest
from providers.options import generation_options
from providers.structured import parse_output
from providers.types import Chunk, Metrics
from tests.kernel_fixtures import GEMMA_ID, kernel_environment, make_store
from tests.ollama_fixtures import gemma_runner, ollama_config, scripted_standin, standin
from tests.ollama_standin import OllamaStandin
from tests.test_openai_mock_transport import MODELS, Make, piece, serve, sse, stream_of

__all__ = ["gemma_runner", "scripted_standin", "serve", "standin"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(300)

GEMMA = f"{GEMMA_ID}@llamacpp"

CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "population": {"type": "integer", "minimum": 1000, "maximum": 100000000},
        "area": {"type": "number", "minimum": 0.5, "maximum": 999.5},
        "country": {"type": "string", "enum": ["France", "Italy", "Spain"]},
        "capital": {"type": "boolean"},
        "districts": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
    },
    "required": ["name", "code", "population", "area", "country", "capital", "districts"],
    "additionalProperties": False,
}
"""Every keyword the issue lists, in one schema."""
PROMPT = (
    "Paris (PAR) is the capital of France. It has 1000000000000000 inhabitants on 105.4 km2,"
    " in the districts Marais, Montmartre, Belleville and Bercy. As JSON:"
)
"""Asks for a population above the schema's maximum (llama-cpp-python's grammar let it through)
and for more districts than ``maxItems``."""


# The check of a schema --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("yaml", "option 'format' must be 'json' or a JSON Schema object, not 'yaml'"),
        (3, "option 'format' must be 'json' or a JSON Schema object, not int"),
        ({"type": "objekt"}, "option 'format' is not a valid JSON Schema: 'objekt' is not valid"),
        (
            {"properties": {"n": {"minimum": "x"}}},
            "'x' is not of type 'number' (at properties/n/minimum)",
        ),
    ],
)
def test_a_format_that_is_not_json_or_a_valid_schema_is_refused(value: Any, words: str) -> None:
    content = {"command": "generate", "model": "m", "prompt": "p", "options": {"format": value}}
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        parse_request(content)
    with pytest.raises(InvalidRequest, match=re.escape(words)):
        generation_options({"format": value}, what="Agent")


def test_an_answer_is_checked_cut_unparsable_or_off_schema() -> None:
    def end(reason: str, tokens: int = 9) -> Chunk:
        return Chunk("", done=True, metrics=Metrics(generated_tokens=tokens, stop_reason=reason))

    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}}
    assert parse_output('{"n": 5}', schema, end("stop"), "m") == {"n": 5}
    with pytest.raises(GenerationError, match="cut by max_tokens after 9 tokens: raise max_t"):
        parse_output('{"n": ', schema, end("length"), "m")
    with pytest.raises(GenerationError, match=r"not valid JSON \(Expecting value at character"):
        parse_output("Blue is the colour", schema, end("stop"), "m")
    with pytest.raises(GenerationError, match=r"does not match the schema: 7 is .*maximum.*at n"):
        parse_output('{"n": 7}', schema, end("stop"), "m")
    with pytest.raises(GenerationError, match="is not of type 'object'"):
        parse_output("[1, 2]", "json", end("stop"), "m")


# llamacpp, with the real model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, gemma_path: Path
) -> Iterator[ProviderManager]:
    store = make_store(tmp_path_factory.mktemp("structured"), gemma_path)
    settings = {"model_directory": str(store), "n_ctx": 1024, "check_imports": False}
    config = Config.from_dict(
        {"providers": {"llamacpp": {"options": settings}, "ollama": {"enabled": False}}}
    )
    manager = ProviderManager(config)
    try:
        yield manager
    finally:
        manager.close()


def answer(manager: ProviderManager, prompt: str, **options: Any) -> tuple[str, Chunk]:
    chunks = list(manager.complete(GEMMA, prompt, GenerationOptions(**options)))
    return "".join(c.text for c in chunks), chunks[-1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_keyword_holds_even_when_sampling_runs_wild(
    manager: ProviderManager, seed: int
) -> None:
    # Temperature 2 over the whole vocabulary: without the grammar, anything goes.
    text, last = answer(
        manager, PROMPT, format=CITY, temperature=2.0, top_k=0, top_p=1.0, seed=seed,
        max_tokens=200,
    )  # fmt: skip
    value = json.loads(text)  # the manager checked it with jsonschema too
    assert set(value) == set(CITY["properties"])  # required, and nothing else
    assert isinstance(value["population"], int) and 1000 <= value["population"] <= 100000000
    assert isinstance(value["area"], int | float) and 0.5 <= value["area"] <= 999.5
    assert re.fullmatch("[A-Z]{3}", value["code"]) and len(value["name"]) <= 12
    assert value["country"] in ("France", "Italy", "Spain")
    assert isinstance(value["capital"], bool)
    assert len(value["districts"]) <= 2 and all(len(d) <= 8 for d in value["districts"])
    assert last.metrics is not None and last.metrics.stop_reason == "stop"


def test_greedy_extraction_reads_the_text(manager: ProviderManager) -> None:
    text, _ = answer(manager, PROMPT, format=CITY, temperature=0.0, max_tokens=200)
    value = json.loads(text)
    assert value["population"] <= 100000000  # asked for 10^15: the bound holds
    assert value["country"] == "France" and value["name"] == "Paris"


def test_json_is_one_object_and_chat_works_too(manager: ProviderManager) -> None:
    text, _ = answer(manager, "A person as JSON:", format="json", temperature=0.0, max_tokens=120)
    assert isinstance(json.loads(text), dict)
    messages = [Message("user", "Name a colour, as JSON with the key colour.")]
    options = GenerationOptions(format="json", temperature=0.0, max_tokens=60)
    chunks = list(manager.chat(GEMMA, messages, options))
    assert isinstance(json.loads("".join(c.text for c in chunks)), dict)


def test_an_answer_cut_by_max_tokens_is_an_error_not_half_a_document(
    manager: ProviderManager,
) -> None:
    with pytest.raises(GenerationError, match="cut by max_tokens after 4 tokens"):
        answer(manager, PROMPT, format=CITY, temperature=0.0, max_tokens=4)


def test_a_schema_llguidance_cannot_enforce_is_refused_by_name(manager: ProviderManager) -> None:
    unique = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    with pytest.raises(InvalidRequest, match=r"option 'format'.*Unimplemented keys.*uniqueItems"):
        answer(manager, "Numbers:", format=unique, max_tokens=20)
    text, _ = answer(manager, "Numbers:", max_tokens=3)  # the model is fine after it
    assert text


# Ollama (the stand-in) and OpenAI endpoints (mock transport) ------------------------------------


def ollama_text(standin: OllamaStandin, prompt: str, options: GenerationOptions) -> str:
    manager = ProviderManager(ollama_config(standin.url, timeout_seconds=120))
    try:
        return "".join(c.text for c in manager.complete("gemma3:270m@ollama", prompt, options))
    finally:
        manager.close()


def test_ollama_gets_format_beside_its_options_and_the_answer_is_checked(
    standin: OllamaStandin, scripted_standin: OllamaStandin
) -> None:
    options = GenerationOptions(format=CITY, temperature=0.0, max_tokens=200)
    assert json.loads(ollama_text(standin, PROMPT, options))["country"] == "France"
    body = standin.bodies("/api/generate")[-1]
    assert body["format"] == CITY and "format" not in body["options"]

    # A server that does not constrain its model (the scripted stand-in answers prose).
    with pytest.raises(GenerationError, match="not valid JSON"):
        ollama_text(scripted_standin, "Hi", GenerationOptions(format="json"))
    assert scripted_standin.bodies("/api/generate")[-1]["format"] == "json"


def test_openai_endpoints_get_json_schema_then_json_object_where_refused(serve: Make) -> None:
    bodies: list[dict[str, Any]] = []
    answer_events = sse(piece('{"n": '), piece("3}"), piece("", "stop"))

    def picky(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if body["response_format"]["type"] == "json_schema":
            return httpx.Response(400, json={"error": {"message": "unknown response_format"}})
        return stream_of(answer_events)

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        return picky(request)

    backend = serve(route)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    options = GenerationOptions(format=schema, max_tokens=8)
    spec = ModelSpec.parse("gemma3-270m@gpu")
    text = "".join(c.text for c in backend.chat(spec, [Message("user", "n?")], options))
    assert text == '{"n": 3}'
    formats = [b["response_format"] for b in bodies]
    assert formats[0] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert formats[-1] == {"type": "json_object", "schema": schema}
    assert bodies[-1]["max_tokens"] == 8
    list(backend.chat(spec, [Message("user", "n?")], GenerationOptions(format="json")))
    assert bodies[-1]["response_format"] == {"type": "json_object"}


# The CLI and the notebook API ------------------------------------------------------------------


def test_the_cli_prints_the_json_alone_on_stdout(tmp_path: Path, gemma_path: Path) -> None:
    env = kernel_environment(tmp_path, make_store(tmp_path, gemma_path))
    schema_file = tmp_path / "city.json"
    schema_file.write_text(json.dumps(CITY))
    base = [sys.executable, "-m", "llmspell_cli", "prompt", "-m", GEMMA, "--raw", "-t", "0"]
    run = subprocess.run(
        [*base, "--max-tokens", "200", "--schema", str(schema_file), PROMPT],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["country"] == "France"  # stdout is the JSON and nothing else
    cut = subprocess.run(
        [*base, "--max-tokens", "3", "--schema", json.dumps(CITY), "A city:"],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert cut.returncode != 0 and cut.stdout == ""
    assert "cut by max_tokens after 3 tokens" in cut.stderr
    assert json.loads(
        subprocess.run(
            [*base, "--max-tokens", "120", "--format", "json", "A person as JSON:"],
            capture_output=True, text=True, env=env, timeout=240, check=True,
        ).stdout
    )  # fmt: skip
    bad = subprocess.run(
        [*base, "--schema", '{"type": "objekt"}', "x"],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert bad.returncode == 2 and "--schema" in bad.stderr and "objekt" in bad.stderr


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")  # additionalProperties: false

    name: str = Field(max_length=12)
    country: str
    population: int = Field(ge=1000, le=100000000)


def test_notebooks_get_parsed_values_and_pydantic_instances(manager: ProviderManager) -> None:
    from llmspell_kernel.agent import bind_agent
    from llmspell_kernel.local_llm import LocalLLM

    llm = LocalLLM(manager)
    llm.set_default_model(GEMMA)
    city = llm.extract(PROMPT, City, temperature=0.0, max_tokens=120)
    assert isinstance(city, City) and city.country == "France" and city.population <= 100000000
    agent = bind_agent(llm)(temperature=0.0, max_tokens=120)
    country = {
        "type": "object",
        "properties": {"country": {"type": "string", "maxLength": 20}},
        "required": ["country"],
        "additionalProperties": False,
    }
    value = agent.complete("Paris is in France. As JSON:", schema=country)
    assert isinstance(value, dict) and list(value) == ["country"]
    assert isinstance(agent.complete("Say hi."), str)  # no schema: text, as before
    with pytest.raises(InvalidRequest, match="schema must be a JSON Schema"):
        llm.extract("x", 42)
