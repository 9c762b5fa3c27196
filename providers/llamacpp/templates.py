"""Which chat template a model gets, and turning messages into its prompt.

The GGUF's own ``tokenizer.chat_template`` (a Jinja template) wins. Without one, the family
named by ``general.architecture`` picks one of llama-cpp-python's built-in formats. Anything else
is a :class:`ChatTemplateError`: llama-cpp-python's silent fallback to the ``llama-2`` format
makes Gemma answer with an empty string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ChatTemplateError
from ..types import Message

if TYPE_CHECKING:
    from llama_cpp import Llama

# general.architecture → family format name
FAMILY_FORMATS: dict[str, str] = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "qwen",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "phi3": "phi3",
    "mistral": "mistral-instruct",
}


@dataclass(frozen=True)
class ChatTemplate:
    """A template choice: ``source`` is ``gguf`` or ``family:<format>``."""

    source: str
    format: str | None = None
    """The family format name; None when the GGUF's own template is used."""
    jinja: str | None = None
    """The GGUF's own template."""


@dataclass(frozen=True)
class FormattedPrompt:
    prompt: str
    stop: tuple[str, ...]
    add_bos: bool
    stop_token_ids: tuple[int, ...] = ()


def choose_template(model_id: str, values: dict[str, str]) -> ChatTemplate:
    """The template for a model with GGUF header ``values``; :class:`ChatTemplateError` if none."""
    own = values.get("tokenizer.chat_template")
    if own:
        return ChatTemplate(source="gguf", jinja=own)
    arch = values.get("general.architecture")
    if not arch:
        raise ChatTemplateError(
            f"model {model_id!r} has no chat template and no general.architecture:"
            " use complete() with a raw prompt, or import a GGUF that has a chat template",
            model=model_id,
            backend="llamacpp",
        )
    if arch == "llama":
        # Llama 3 uses a BPE ("gpt2") tokenizer, Llama 2 and its kin a SentencePiece one.
        bpe = values.get("tokenizer.ggml.model") == "gpt2"
        llama_format = "llama-3" if bpe else "llama-2"
        return ChatTemplate(source=f"family:{llama_format}", format=llama_format)
    name = FAMILY_FORMATS.get(arch)
    if name is None:
        raise ChatTemplateError(
            f"model {model_id!r} has no chat template and its architecture {arch!r} has no"
            f" known chat format (known: llama, {', '.join(sorted(FAMILY_FORMATS))}):"
            " use complete() with a raw prompt, or import a GGUF that has a chat template",
            model=model_id,
            backend="llamacpp",
        )
    return ChatTemplate(source=f"family:{name}", format=name)


def format_messages(
    template: ChatTemplate, messages: Sequence[Message], llama: Llama
) -> FormattedPrompt:
    """The prompt for ``messages`` under ``template``, ready to be tokenized by ``llama``."""
    dicts: list[Any] = [m.to_dict() for m in messages]
    if template.jinja is not None:
        return _own_template(template.jinja, dicts, llama)
    formatter = _FORMATTERS[template.format or ""]
    try:
        result = formatter(messages=dicts)
    except Exception as exc:
        raise ChatTemplateError(f"chat template ({template.source}) failed: {exc}") from exc
    stop = result.stop
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return FormattedPrompt(prompt=result.prompt, stop=stops, add_bos=not result.added_special)


def _own_template(source: str, messages: list[Any], llama: Llama) -> FormattedPrompt:
    """The GGUF's own template, rendered within bounds (:mod:`.jinja_sandbox`)."""
    from .jinja_sandbox import render

    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    eos = _token_text(llama, eos_id)
    try:
        prompt = render(
            source,
            messages=messages,
            eos_token=eos,
            bos_token=_token_text(llama, bos_id),
            add_generation_prompt=True,
            functions=None,
            function_call=None,
            tools=None,
            tool_choice=None,
        )
    except Exception as exc:  # a template's own raise_exception(), a bound, a Jinja error
        raise ChatTemplateError(
            f"the model's own chat template (gguf) failed: {type(exc).__name__}: {exc}"
        ) from exc
    return FormattedPrompt(
        prompt=prompt,
        stop=(eos,),
        add_bos=False,  # the template writes the BOS token itself, as llama-cpp-python assumes
        stop_token_ids=(eos_id,) if eos_id != -1 else (),
    )


def _token_text(llama: Llama, token: int) -> str:
    if token == -1:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace")


def _fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Gemma has no system role: its own template prepends the system text to the first user
    turn, which llama-cpp-python's ``gemma`` format would otherwise drop."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        for message in rest:
            if message["role"] == "user":
                message["content"] = f"{system}\n\n{message['content']}"
                break
        else:
            rest.insert(0, {"role": "user", "content": system})
    return rest


def _gemma(*, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    from llama_cpp import llama_chat_format as formats

    return formats.format_gemma(messages=_fold_system(messages), **kwargs)


def _phi3(*, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    from llama_cpp import llama_chat_format as formats

    prompt = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    return formats.ChatFormatterResponse(prompt=prompt + "<|assistant|>\n", stop="<|end|>")


def _builtin(name: str) -> Callable[..., Any]:
    def call(*, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        from llama_cpp import llama_chat_format as formats

        return getattr(formats, name)(messages=messages, **kwargs)

    return call


_FORMATTERS: dict[str, Callable[..., Any]] = {
    "gemma": _gemma,
    "phi3": _phi3,
    "llama-2": _builtin("format_llama2"),
    "llama-3": _builtin("format_llama3"),
    "chatml": _builtin("format_chatml"),
    "qwen": _builtin("format_qwen"),
    "mistral-instruct": _builtin("format_mistral_instruct"),
}
