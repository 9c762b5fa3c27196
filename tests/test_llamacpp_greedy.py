"""Greedy output is the same on a cold model and on a warm one with ``reproducible`` (issue
21, item 8), also when conversations take turns through the conversation state cache (issue 17),
and when a history is edited.

llama.cpp's logits depend, in their last bits, on how the prompt's tokens are batched; a warm
model used to reuse its cached prompt and evaluate a single token, and `--temperature 0` then
picked other tokens than on a cold kernel. This prompt (Gemma 3 270M, two threads, the default
context) is one where that happened: ``hiordinaryuser...`` cold, ``hiordinary\\nhiordinary``
warm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from providers import Config, GenerationOptions, Message, ModelSpec
from providers.llamacpp import LlamaCppBackend

pytestmark = [pytest.mark.model, pytest.mark.slow]

PROMPT = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
GREEDY = GenerationOptions(temperature=0, max_tokens=16)
SPEC = ModelSpec.parse("gemma")


@pytest.fixture
def make(tmp_path: Path, gemma_path: Path) -> Iterator[Callable[..., LlamaCppBackend]]:
    made: list[LlamaCppBackend] = []

    def backend(**extra: Any) -> LlamaCppBackend:
        options = {"model_directory": str(tmp_path / "models"), "n_ctx": 4096, "n_threads": 2}
        options |= {"reproducible": True, **extra}
        config = Config.from_dict({"providers": {"llamacpp": {"options": options}}})
        made.append(LlamaCppBackend(config))
        made[-1].import_model(gemma_path, "gemma", link=True)
        return made[-1]

    yield backend
    for backend_made in made:
        backend_made.close()


def complete(backend: LlamaCppBackend, prompt: str = PROMPT) -> str:
    return "".join(chunk.text for chunk in backend.complete(SPEC, prompt, GREEDY))


def test_greedy_text_is_the_same_cold_and_warm(make: Callable[..., LlamaCppBackend]) -> None:
    warm = make()
    cold_text = complete(warm)  # the first generation of a freshly loaded model
    assert cold_text
    assert complete(warm) == cold_text  # the same prompt again: its cache is there
    complete(warm, "Something else entirely, about the weather.")
    assert complete(warm) == cold_text  # after another prompt
    assert complete(make()) == cold_text  # another cold model


def chat(backend: LlamaCppBackend, messages: list[Message]) -> str:
    return "".join(chunk.text for chunk in backend.chat(SPEC, messages, GREEDY))


def turns_of(backend: LlamaCppBackend, conversations: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every conversation's answers, the conversations taking turns on ``backend``."""
    histories: dict[str, list[Message]] = {name: [] for name in conversations}
    answers: dict[str, list[str]] = {name: [] for name in conversations}
    for turn in range(max(len(q) for q in conversations.values())):
        for name, questions in conversations.items():
            histories[name].append(Message("user", questions[turn]))
            answer = chat(backend, histories[name])
            histories[name].append(Message("assistant", answer))
            answers[name].append(answer)
    return answers


def test_conversations_taking_turns_answer_as_each_would_alone(
    make: Callable[..., LlamaCppBackend],
) -> None:
    """With ``reproducible``, the state cache must give exactly what a cold model gives; an
    edited history must not be served a stale state."""
    questions = {
        name: [
            f"Conversation {name}, question {n}: name a {thing}."
            for n, thing in enumerate(("colour", "fruit", "city", "tree"))
        ]
        for name in ("A", "B")
    }
    shared = make()
    together = turns_of(shared, questions)
    states = shared.info(SPEC).details["conversation_cache"]
    assert states["hits"] >= 1 and 0 < states["bytes"] <= states["capacity_bytes"]
    for name in questions:
        assert turns_of(make(conversation_cache_bytes=0), {name: questions[name]}) == {
            name: together[name]
        }
    edited = [Message("user", questions["A"][0]), Message("assistant", "Green, no: blue.")]
    edited.append(Message("user", questions["A"][1]))
    assert chat(shared, edited) == chat(make(conversation_cache_bytes=0), edited)


def test_without_reproducible_the_cache_still_serves_each_conversation(
    make: Callable[..., LlamaCppBackend],
) -> None:
    backend = make(reproducible=False)
    questions = {name: [f"{name}: say one word.", f"{name}: one more."] for name in ("A", "B")}
    answers = turns_of(backend, questions)
    assert all(all(text for text in texts) for texts in answers.values())
    assert backend.info(SPEC).details["conversation_cache"]["hits"] >= 2
    tiny = make(reproducible=False, conversation_cache_bytes=1000)  # smaller than any state
    turns_of(tiny, {"A": questions["A"][:1]})
    assert tiny.info(SPEC).details["conversation_cache"]["states"] == 0
