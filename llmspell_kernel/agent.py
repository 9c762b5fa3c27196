"""``Agent``: a conversation with one local model, for notebook cells and scripts.

The ``Agent`` in the user namespace is a subclass bound to the kernel's :class:`LocalLLM` (see
:func:`bind_agent`), so ``Agent()`` finds the provider manager and the default model without
being told.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from providers import Cancelled, GenerationOptions, InvalidRequest, Message, Metrics
from providers.options import CONVERSATION_DEFAULTS, generation_options, with_defaults

from .commands import generation
from .conversation_log import ConversationLog, new_conversation_id
from .interrupts import GenerationStopped
from .local_llm import LocalLLM
from .protocol.requests import GenerateRequest, validate
from .schemas import output_format, read_answer

NO_MODEL_HINT = "pass Agent(model=...) or LocalLLM.set_default_model(...)"

log = logging.getLogger(__name__)


class Agent:
    """A conversation with one local model.

    ``Agent(model=None, system_prompt=None, **options)``: ``model`` is a spec such as
    ``"gemma3-270m"`` (None = ``LocalLLM.default_model``); options are generation options
    (``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repeat_penalty``, ``seed``,
    ``max_tokens``, ``stop``, ``num_ctx``, ``overflow``: ``truncate`` by default, so that a
    conversation longer than the context goes on without its oldest turns, and
    ``last_metrics["dropped_messages"]`` says how many; ``error`` refuses it).

    - ``complete(text, schema=None)``: one answer to ``text`` alone (system prompt, no
      history); with a ``schema``, the JSON answer parsed (see :meth:`complete`);
    - ``chat(text)``: the next turn of the conversation, remembered in ``history``;
    - ``stream(text)``: like ``chat``, yielding the text as it is generated;
    - ``reset()`` forgets the conversation; ``last_metrics`` describes the last generation;
    - every turn is kept in the conversation log (``llmspell logs list``) under
      ``conversation_id``; ``Agent.resume(ID)`` continues a logged conversation.
    """

    _llm: ClassVar[LocalLLM | None] = None

    def __init__(
        self, model: str | None = None, system_prompt: str | None = None, **options: Any
    ) -> None:
        llm = type(self)._llm
        if llm is None:
            raise InvalidRequest(
                "this Agent class is not bound to a kernel: use the Agent that the llmspell "
                "kernel puts in the notebook namespace"
            )
        self._llm_bound = llm
        self.model: str = llm.require_model(model, NO_MODEL_HINT)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidRequest(
                f"Agent system_prompt must be a string, not {type(system_prompt).__name__}"
            )
        self.system_prompt = system_prompt or None
        self.options: GenerationOptions = with_defaults(
            generation_options(options, what="Agent"), CONVERSATION_DEFAULTS
        )
        self._turns: list[Message] = []
        self._last_metrics: Metrics | None = None
        self.conversation_id = new_conversation_id()
        self._log = ConversationLog.of(llm.manager.config)

    @classmethod
    def resume(cls, conversation_id: str, **options: Any) -> Agent:
        """An Agent that continues a logged conversation (of ``llmspell chat``, ``prompt``
        or another Agent): its model, system prompt and turns; ``options`` as for a new one."""
        llm = cls._llm
        log_ = ConversationLog.of(llm.manager.config) if llm is not None else None
        if log_ is None:
            raise InvalidRequest("the conversation log is off ([logs] enabled = false)")
        model, messages = log_.history(conversation_id)
        system = messages[0].content if messages and messages[0].role == "system" else None
        agent = cls(model=model, system_prompt=system, **options)
        agent._turns = [m for m in messages if m.role != "system"]
        agent.conversation_id = conversation_id
        return agent

    def __repr__(self) -> str:
        turns = len(self._turns) // 2
        return f"<Agent model={self.model!r} turns={turns}>"

    # Conversation ---------------------------------------------------------------------------

    @property
    def history(self) -> list[dict[str, str]]:
        """The messages the next turn sends before the new one: system prompt first."""
        return [message.to_dict() for message in (*self._system(), *self._turns)]

    @property
    def last_metrics(self) -> dict[str, Any] | None:
        """Token counts and timings of the last finished generation (None before any)."""
        return self._last_metrics.to_dict() if self._last_metrics is not None else None

    def reset(self) -> None:
        """Forget the conversation (the system prompt and options stay); the next turn starts
        a new conversation in the log."""
        self._turns.clear()
        self.conversation_id = new_conversation_id()

    def complete(self, text: str, schema: Any = None) -> Any:
        """One answer to ``text`` with the system prompt but without the conversation.

        With ``schema`` (a JSON Schema dict, ``"json"``, or a pydantic model class) the answer
        is JSON that satisfies it, returned parsed (an instance of the class for a pydantic
        model); an answer that cannot be completed within ``max_tokens`` raises."""
        user = Message("user", _user_text(text, "complete"))
        options, reader = self.options, None
        if schema is not None:
            output, reader = output_format(schema, "Agent.complete")
            options = replace(options, format=output)
        pieces = self._generate([*self._system(), user], new_conversation_id(), options)
        try:
            answer = "".join(pieces)
        finally:
            pieces.close()
        return answer if reader is None else read_answer(answer, reader)

    def chat(self, text: str) -> str:
        """The model's answer to ``text`` as the next turn; both are added to ``history``."""
        pieces = self._turn(Message("user", _user_text(text, "chat")))
        try:
            return "".join(pieces)
        finally:
            pieces.close()

    def stream(self, text: str) -> Generator[str, None, None]:
        """Like :meth:`chat`, yielding the answer's text pieces as they are generated.

        The turn is in ``history`` as it grows: stopped early (a ``break``, Stop in a
        notebook), it keeps the part received and ``last_metrics`` says ``cancelled``; a
        failed generation adds nothing.
        """
        user = Message("user", _user_text(text, "stream"))
        return self._turn(user)

    # Internals ------------------------------------------------------------------------------

    def _system(self) -> list[Message]:
        return [Message("system", self.system_prompt)] if self.system_prompt else []

    def _generate(
        self,
        messages: Sequence[Message],
        conversation: str,
        options: GenerationOptions | None = None,
    ) -> Generator[str, None, None]:
        """The kernel's own ``generate`` handler, run here (with ``options``, else the
        Agent's): yields the pieces, keeps the metrics when the generation ends, and logs the
        answer under ``conversation``."""
        self._last_metrics = None
        fields = {
            "model": self.model,
            "messages": list(messages),
            "options": options or self.options,
        }
        request = validate(GenerateRequest, fields)
        _, pieces = generation(self._llm_bound.manager, request)
        try:
            result = yield from pieces
        finally:
            pieces.close()
        self._last_metrics = result.metrics
        self._log_answer(conversation, messages, result.model, result.text, result.metrics)

    def _log_answer(
        self,
        conversation: str,
        messages: Sequence[Message],
        model: str,
        text: str,
        metrics: Metrics,
    ) -> None:
        if self._log is None:
            return
        problem = self._log.keep(
            conversation=conversation,
            source="agent",
            model=model,
            messages=messages,
            text=text,
            options=self.options,
            metrics=metrics,
        )
        if problem is not None:  # the answer is the user's either way
            log.warning("%s", problem)

    def _turn(self, user: Message) -> Generator[str, None, None]:
        """The generation of one turn. The turn is in ``history`` from its first piece on,
        growing with each, so an answer stopped anywhere (an interrupt in the reader's own
        loop too, where this generator is never closed) keeps the text received; only a
        failed generation takes it out again."""
        pieces: list[str] = []
        complete = stopped = False
        asked = [*self._system(), *self._turns, user]
        generation = self._generate(asked, self.conversation_id)
        start = len(self._turns)
        try:
            for piece in generation:
                pieces.append(piece)
                self._turns[start:] = [user, Message("assistant", "".join(pieces))]
                yield piece
            self._turns[start:] = [user, Message("assistant", "".join(pieces))]
            complete = True
        except KeyboardInterrupt:
            # An interrupt (Stop in a notebook) stopped the generation: one line, not frames.
            stopped = True
            raise GenerationStopped(len(pieces), self.model) from None
        except (GeneratorExit, Cancelled):  # the reader stopped (a break, a closed iterator)
            stopped = True
            raise
        finally:
            generation.close()
            if not (complete or stopped):
                del self._turns[start:]  # a failed generation adds nothing
            elif not complete and pieces:
                self._last_metrics = Metrics(generated_tokens=len(pieces), stop_reason="cancelled")
                self._log_answer(
                    self.conversation_id, asked, self.model, "".join(pieces), self._last_metrics
                )


def bind_agent(llm: LocalLLM) -> type[Agent]:
    """An ``Agent`` class whose instances use ``llm``'s manager and default model."""

    class BoundAgent(Agent):
        __doc__ = Agent.__doc__
        _llm = llm

    BoundAgent.__name__ = BoundAgent.__qualname__ = "Agent"
    return BoundAgent


def _user_text(text: object, method: str) -> str:
    if not isinstance(text, str):
        raise InvalidRequest(f"Agent.{method}: text must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InvalidRequest(f"Agent.{method}: text is empty")
    return text
