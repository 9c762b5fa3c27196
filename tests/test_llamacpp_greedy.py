"""Greedy output is the same on a cold model and on a warm one (issue 21, item 8).

llama.cpp's logits depend, in their last bits, on how the prompt's tokens are batched; a warm
model used to reuse its cached prompt and evaluate a single token, and `--temperature 0` then
picked other tokens than on a cold kernel. This prompt (Gemma 3 270M, two threads, the default
context) is one where that happened: ``hiordinaryuser...`` cold, ``hiordinary\\nhiordinary``
warm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers import Config, GenerationOptions, ModelSpec
from providers.llamacpp import LlamaCppBackend

pytestmark = [pytest.mark.model, pytest.mark.slow]

PROMPT = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
GREEDY = GenerationOptions(temperature=0, max_tokens=16)
SPEC = ModelSpec.parse("gemma")


@pytest.fixture
def make(tmp_path: Path, gemma_path: Path) -> Iterator[Callable[[], LlamaCppBackend]]:
    made: list[LlamaCppBackend] = []

    def backend() -> LlamaCppBackend:
        options = {"model_directory": str(tmp_path / "models"), "n_ctx": 4096, "n_threads": 2}
        config = Config.from_dict({"providers": {"llamacpp": {"options": options}}})
        made.append(LlamaCppBackend(config))
        made[-1].import_model(gemma_path, "gemma", link=True)
        return made[-1]

    yield backend
    for backend_made in made:
        backend_made.close()


def complete(backend: LlamaCppBackend, prompt: str = PROMPT) -> str:
    return "".join(chunk.text for chunk in backend.complete(SPEC, prompt, GREEDY))


def test_greedy_text_is_the_same_cold_and_warm(make: Callable[[], LlamaCppBackend]) -> None:
    warm = make()
    cold_text = complete(warm)  # the first generation of a freshly loaded model
    assert cold_text
    assert complete(warm) == cold_text  # the same prompt again: its cache is there
    complete(warm, "Something else entirely, about the weather.")
    assert complete(warm) == cold_text  # after another prompt
    assert complete(make()) == cold_text  # another cold model
