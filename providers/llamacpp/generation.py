"""Generating with a loaded llama.cpp model: checking a request, building its prompt, and the
token loop that streams :class:`Chunk` objects and measures them.

Every llama_cpp exception raised while generating is translated here, with ``raise ... from
exc``. Closing the stream stops llama.cpp before its next token.

No runaway by default: options a request leaves unset get Ollama's documented sampling
defaults (:data:`SAMPLING_DEFAULTS`, applied by the backend), and the token loop stops with
``stop_reason`` ``repetition`` once the text ends with one passage repeated
:data:`REPEATS` times in a row (:func:`repeated_tail`).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import GenerationError, InvalidRequest, LLMSpellError
from ..types import Chunk, GenerationOptions, Message, Metrics
from .cancel import check_cancel
from .conversations import StateCache
from .ids import BACKEND
from .templates import ChatTemplate, format_messages

if TYPE_CHECKING:
    from llama_cpp import Llama

MIN_CONTEXT = 256

DEFAULT_MAX_TOKENS = 512
SAMPLING_DEFAULTS = GenerationOptions(
    temperature=0.8, top_k=40, top_p=0.9, repeat_penalty=1.1, max_tokens=DEFAULT_MAX_TOKENS
)
"""The backend's defaults for the options a request (and ``[generation]``) leaves unset: the
sampling is Ollama's documented defaults (llama-cpp-python's own would be top_p 0.95 and no
repeat penalty at all, with which small models loop until the context is full). Even so, a base
model given a bare prompt goes on with variations that no repetition stop can tell from text
(Gemma 3 270M: "The capital of India is paying the following bills." and on and on): hence
``max_tokens`` 512, about 380 words, 12-25 s for that model on two cores; a request or
``[generation]`` sets more."""
REUSE_BATCH = 64
"""The ``n_batch`` of a loaded model: a prompt is evaluated in batches of 64 tokens, so that a
new turn of a conversation re-evaluates at most 63 tokens of its history beside its own (see
:func:`reuse_whole_batches`). Measured here (Gemma 3 270M, 632 tokens, 2 threads): 393 tokens/s
with 64, 380 with llama.cpp's default 512, 304 with 32."""
REPEAT_LAST_N = 64
"""How many of the last tokens the repeat penalty looks at (Ollama's ``repeat_last_n``; the
``last_n_tokens_size`` of a ``Llama``)."""

REPEAT_MIN, REPEAT_MAX = 16, 256
"""The lengths (characters) of a passage that :func:`repeated_tail` looks for."""
REPEATS = 4
REPEAT_CHECK_EVERY = 32
"""Characters generated between two looks for a repetition."""
_ROLES = ("system", "user", "assistant")


class Prompt(NamedTuple):
    """A prompt's tokens, the stop strings and stop token ids its template adds, and how many
    messages of the conversation were left out to fit the context."""

    tokens: list[int]
    stops: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] = ()
    dropped: int = 0


PromptBuilder = Callable[["Llama", GenerationOptions], Prompt]


# Checking a request ------------------------------------------------------------------------------


def check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise InvalidRequest("chat needs at least one message")
    for message in messages:
        if message.role not in _ROLES or not isinstance(message.content, str):
            raise InvalidRequest(
                f"invalid message {message!r}: role must be one of {', '.join(_ROLES)}"
                " and content a string"
            )


def check_prompt(prompt: str) -> None:
    if not isinstance(prompt, str):
        raise InvalidRequest(f"prompt must be a string, not {type(prompt).__name__}")


def context_size(requested: int | None) -> int | None:
    """llama.cpp rounds context sizes below 256 up to 256, and llama-cpp-python then sizes
    its token buffer from the number asked for and fails; so ask for what will be used."""
    return None if requested is None else max(requested, MIN_CONTEXT)


# Prompts --------------------------------------------------------------------------------------


def chat_prompt(template: ChatTemplate, messages: Sequence[Message]) -> PromptBuilder:
    """``messages`` through the model's chat template; with ``overflow: truncate``, without the
    oldest turns that do not fit (see :func:`fit_conversation`)."""

    def tokens_of(llama: Llama, chosen: Sequence[Message]) -> Prompt:
        formatted = format_messages(template, chosen, llama)
        tokens = llama.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=formatted.add_bos, special=True
        )
        return Prompt(tokens, formatted.stop, formatted.stop_token_ids)

    def build(llama: Llama, options: GenerationOptions) -> Prompt:
        if options.overflow != "truncate":
            return tokens_of(llama, messages)
        return fit_conversation(messages, lambda m: tokens_of(llama, m), budget(llama, options))

    return build


def budget(llama: Llama, options: GenerationOptions) -> int:
    """How many prompt tokens leave room for the answer: the context less ``max_tokens``
    (at most half the context, so that a long answer asked of a small context still leaves
    its conversation a place)."""
    context = int(llama.n_ctx())
    return context - min(options.max_tokens or 0, context // 2)


def fit_conversation(
    messages: Sequence[Message], tokens_of: Callable[[Sequence[Message]], Prompt], limit: int
) -> Prompt:
    """The prompt of ``messages`` without as many of the oldest turns as it takes to be at most
    ``limit`` tokens: the leading system messages and the last message are always kept, and the
    kept part starts with a user message (turns go in pairs). The result's ``dropped`` counts
    the messages left out; when even the shortest prompt is too long, it is returned as it is
    (the token loop then says that the prompt does not fit)."""
    head = 0
    while head < len(messages) - 1 and messages[head].role == "system":
        head += 1
    system, turns = list(messages[:head]), list(messages[head:])
    dropped = 0
    prompt = tokens_of(messages)
    while len(prompt.tokens) > limit and len(turns) > 1:
        turns.pop(0)
        dropped += 1
        while len(turns) > 1 and turns[0].role != "user":
            turns.pop(0)
            dropped += 1
        prompt = tokens_of(system + turns)
    return prompt._replace(dropped=dropped)


def completion_prompt(prompt: str) -> PromptBuilder:
    """``prompt`` as given (no template)."""

    def build(llama: Llama, _options: GenerationOptions) -> Prompt:
        return Prompt(llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    return build


# The token loop --------------------------------------------------------------------------------


def build_prompt(
    model_id: str, llama: Llama, prompt: PromptBuilder, options: GenerationOptions
) -> Prompt:
    """The prompt's tokens, built with ``llama`` (its template rendered, its text tokenized)."""
    try:
        return prompt(llama, options)
    except LLMSpellError:
        raise
    except Exception as exc:
        raise GenerationError(
            f"{model_id}: cannot build the prompt: {exc}", model=model_id, backend=BACKEND
        ) from exc


def repeated_tail(text: str) -> str | None:
    """The passage of :data:`REPEAT_MIN` to :data:`REPEAT_MAX` characters that ``text`` ends
    with :data:`REPEATS` times in a row, if any.

    A passage that is itself a shorter unit repeated (a row of dashes, ``0, 0, 0, ``) does not
    count: rules, padding and tables legitimately repeat short units.
    """
    for size in range(REPEAT_MIN, min(REPEAT_MAX, len(text) // REPEATS) + 1):
        passage = text[-size:]
        if text[-2 * size : -size] != passage or not text.endswith(passage * REPEATS):
            continue
        if not any(
            size % unit == 0 and passage == passage[:unit] * (size // unit)
            for unit in range(1, REPEAT_MIN)
        ):
            return passage
    return None


class _TokenObserver:
    """A stopping criterion that never stops: it notes when the first token was sampled and
    how many were (each call sees the tokens before the one just sampled)."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.first_at: float | None = None
        self.seen = 0

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.seen = max(self.seen, len(input_ids))
        return False

    @property
    def sampled(self) -> int:
        return 0 if self.first_at is None else self.seen - self.prompt_tokens + 1


def stream_prompt(
    model_id: str,
    llama: Llama,
    prompt: Prompt,
    options: GenerationOptions,
    load_seconds: float,
    cancel: threading.Event | None,
    queue_seconds: float = 0.0,
) -> Generator[Chunk, None, None]:
    """Stream the continuation of ``prompt`` (see :func:`build_prompt`); the caller holds the
    model for the whole stream. ``load_seconds`` is what loading it took and ``queue_seconds``
    how long the request waited for it, for the metrics."""
    from llama_cpp import LogitsProcessorList, StoppingCriteriaList

    tokens, stops, stop_ids = prompt.tokens, prompt.stops, prompt.stop_ids
    context = llama.n_ctx()
    if len(tokens) >= context:
        advice = (
            "its last message alone does not fit: shorten it"
            if options.overflow == "truncate"
            else "shorten it, set num_ctx, or set overflow to truncate (drop the oldest turns)"
        )
        raise GenerationError(
            f"{model_id}: the prompt has {len(tokens)} tokens, the context holds {context}:"
            f" {advice}",
            model=model_id,
            backend=BACKEND,
        )
    observer = _TokenObserver(len(tokens))
    criteria: list[Callable[[Any, Any], bool]] = [observer]
    if stop_ids:
        criteria.append(lambda ids, _logits: len(ids) > len(tokens) and int(ids[-1]) in stop_ids)
    constraint = None
    if options.format is not None:
        from .grammar import Constraint

        constraint = LogitsProcessorList([Constraint(model_id, llama, options.format, len(tokens))])
    started = time.perf_counter()
    prepare_context(llama, tokens)
    finish: str | None = None
    try:
        stream: Any = llama.create_completion(
            prompt=tokens,
            stream=True,
            max_tokens=options.max_tokens,
            stop=[*options.stop, *stops],
            stopping_criteria=StoppingCriteriaList(criteria),
            logits_processor=constraint,
            **_sampling(options),
        )
    except ValueError as exc:
        raise GenerationError(f"{model_id}: {exc}", model=model_id, backend=BACKEND) from exc
    tail, unchecked = "", 0
    try:
        for part in stream:
            check_cancel("generation with", model_id, cancel)
            choice = part["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice["text"]:
                yield Chunk(text=choice["text"])
                tail = (tail + choice["text"])[-REPEAT_MAX * REPEATS :]
                unchecked += len(choice["text"])
                if unchecked >= REPEAT_CHECK_EVERY and constraint is None:
                    unchecked = 0
                    if repeated_tail(tail) is not None:
                        finish = "repetition"
                        break
    except (ValueError, RuntimeError, OSError) as exc:
        raise GenerationError(
            f"{model_id}: generation failed: {exc}", model=model_id, backend=BACKEND
        ) from exc
    finally:
        stream.close()  # on a consumer's close(): stops llama.cpp before the next token
    ended = time.perf_counter()
    keep_context(llama)
    first = observer.first_at or ended
    generated = observer.sampled
    generation_seconds = ended - first
    yield Chunk(
        text="",
        done=True,
        metrics=Metrics(
            prompt_tokens=len(tokens),
            generated_tokens=generated,
            load_seconds=round(load_seconds, 6),
            prompt_seconds=round(first - started, 6),
            generation_seconds=round(generation_seconds, 6),
            total_seconds=round(load_seconds + queue_seconds + ended - started, 6),
            time_to_first_token=(
                round(queue_seconds + first - started, 6) if observer.first_at else None
            ),
            tokens_per_second=(
                round((generated - 1) / generation_seconds, 3)
                if generated > 1 and generation_seconds > 0
                else None
            ),
            stop_reason=finish or "stop",
            queue_seconds=round(queue_seconds, 6),
            dropped_messages=prompt.dropped,
        ),
    )


# Prompt cache reuse --------------------------------------------------------------------------

# Per loaded model: how many leading positions of its context were evaluated in whole batches
# that start at multiples of n_batch, as a cold model evaluates a prompt.
_WHOLE_BATCHES: weakref.WeakKeyDictionary[Llama, int] = weakref.WeakKeyDictionary()
# Per loaded model: the saved states of its recent conversations (see .conversations).
_STATES: weakref.WeakKeyDictionary[Llama, StateCache] = weakref.WeakKeyDictionary()
# The loaded models that reuse evaluated tokens only in whole batches (``reproducible``).
_REPRODUCIBLE: weakref.WeakSet[Llama] = weakref.WeakSet()


def configure_reuse(llama: Llama, *, cache_bytes: int, reproducible: bool) -> None:
    """How ``llama`` reuses what it evaluated before: a conversation state cache of
    ``cache_bytes`` (0: none); with ``reproducible``, only in whole batches (greedy output
    then is the same as on a cold model, and a turn re-evaluates up to ``n_batch`` - 1 tokens
    of its history); else every token it can, as llama-cpp-python and Ollama do."""
    if cache_bytes > 0:
        _STATES[llama] = StateCache(cache_bytes)
    if reproducible:
        _REPRODUCIBLE.add(llama)


def conversation_cache(llama: Llama) -> StateCache | None:
    return _STATES.get(llama)


def _reusable(llama: Llama) -> int:
    """How many leading positions of ``llama``'s context a later prompt may reuse: all it
    evaluated, or with ``reproducible`` its whole batches."""
    return _WHOLE_BATCHES.get(llama, 0) if llama in _REPRODUCIBLE else int(llama.n_tokens)


def prepare_context(llama: Llama, tokens: Sequence[int]) -> None:
    """Before a generation of ``tokens``: restore the saved conversation state that reuses
    the most of them, if it beats the context; with ``reproducible``, reuse whole batches only."""
    exact = llama in _REPRODUCIBLE
    states = _STATES.get(llama)
    if states is not None:
        granularity = max(int(llama.n_batch), 1) if exact else 1
        restored = states.restore_best(llama, tokens, _reusable(llama), granularity)
        if restored is not None and exact:
            _WHOLE_BATCHES[llama] = restored
    if exact:
        reuse_whole_batches(llama, tokens)


def keep_context(llama: Llama) -> None:
    """After a generation: keep the context's state for the conversation's next turn."""
    states = _STATES.get(llama)
    if states is not None:
        states.save(llama, _reusable(llama))


def reuse_whole_batches(llama: Llama, tokens: Sequence[int]) -> None:
    """Let llama-cpp-python reuse the context's evaluated prefix of ``tokens`` only in whole
    batches, so that greedy output is the same on a warm model as on a cold one.

    llama.cpp's results depend (in the last bits) on how tokens are batched: left to itself,
    llama-cpp-python keeps the longest matching prefix and evaluates the rest as one batch, so
    a prompt seen before is evaluated as a batch of one token instead of the whole prompt, and
    ``temperature 0`` can pick another token (measured with Gemma 3 270M: ``hiordinaryuser``
    cold, ``hiordinary`` warm). Here the reused prefix is cut to the whole batches of
    ``n_batch`` tokens that a cold evaluation would have computed the same way; the rest is
    evaluated again, in the same batches as on a cold model. Hence the small ``n_batch``
    (:data:`REUSE_BATCH`): at most 63 tokens of a prompt seen before are evaluated again.
    """
    batch = max(int(llama.n_batch), 1)
    reusable = min(_WHOLE_BATCHES.get(llama, 0), int(llama.n_tokens), len(tokens) - 1)
    common = 0
    for cached, wanted in zip(llama.input_ids[:reusable], tokens, strict=False):
        if int(cached) != wanted:
            break
        common += 1
    llama.n_tokens = common - common % batch
    _WHOLE_BATCHES[llama] = len(tokens) - len(tokens) % batch


def _sampling(options: GenerationOptions) -> dict[str, Any]:
    """Options given (not None) as create_completion keywords; the rest keep its defaults."""
    names = {
        "temperature": options.temperature,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "min_p": options.min_p,
        "repeat_penalty": options.repeat_penalty,
        "frequency_penalty": options.frequency_penalty,
        "presence_penalty": options.presence_penalty,
        "seed": options.seed,
    }
    return {k: v for k, v in names.items() if v is not None}
