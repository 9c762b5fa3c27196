"""Embeddings inside a model runner: a second llama.cpp context on the loaded model's weights.

:class:`EmbeddingContext` is made on the first ``embed`` request, beside the generation
context, from the same ``llama_model`` (the weights are in memory once; only the context's
own buffers are new). Its pooling comes from the model's metadata (``{arch}.pooling_type``),
or is MEAN when the model declares none (a generative model such as Gemma 3 does not; without
a pooling type llama.cpp would return one vector per token).

Inputs are packed into batches as llama-cpp-python's ``Llama.embed`` packs them: as many whole
inputs as fit in :data:`EMBEDDING_CONTEXT` tokens, each its own sequence, in one
``llama_decode``. One decode per input was measured too: about as fast on a quiet 2-core
machine (0.95x), but 0.08-1.6x the speed of packing (median 0.24x) on a busy one, where each
of the many small decodes waits for llama.cpp's threads to meet. The cost of packing: a text's
vector depends slightly on what is packed with it: measured on Gemma 3 270M, up to 3e-3 apart per
component after normalization (cosine 0.9999) from the same text embedded alone. The same
request always gets the same vectors.

llama.cpp computes every token's logits in embedding mode (all tokens are outputs), which for
Gemma's 262,144-token vocabulary is most of the work and about 1 GB of buffers per 512 tokens
(a runner's RSS: 430 MiB, then 1,463 MiB after full batches, until the model is unloaded; the
memory check before a load does not count it): hence the small :data:`EMBEDDING_CONTEXT`.
``truncate`` cuts a longer input to it (Ollama's default); without it a longer input is
:class:`InvalidRequest` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..embedding import l2_normalized
from ..errors import GenerationError, InvalidRequest, UnsupportedOperation
from .ids import BACKEND

if TYPE_CHECKING:
    from llama_cpp import Llama

EMBEDDING_CONTEXT = 512
"""The most tokens one input may have (the embedding context's size, and its batch)."""

# enum llama_pooling_type
POOLING_NONE = 0
POOLING_MEAN = 1
POOLING_RANK = 4
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


def declared_pooling(metadata: dict[str, str]) -> int | None:
    """The pooling type a GGUF declares (``{arch}.pooling_type``), or None."""
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.pooling_type") if arch else None
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def pooling_for(metadata: dict[str, str], model_id: str) -> int:
    """The pooling to embed with: the declared one, or MEAN when there is none (or NONE)."""
    declared = declared_pooling(metadata)
    if declared == POOLING_RANK:
        raise UnsupportedOperation(
            f"{model_id} is a reranker (its GGUF declares pooling 'rank'): it scores pairs"
            " of texts, it does not embed them",
            model=model_id,
            backend=BACKEND,
        )
    if declared is None or declared == POOLING_NONE or declared not in POOLING_NAMES:
        return POOLING_MEAN
    return declared


class EmbeddingContext:
    """A llama.cpp context in embedding mode on ``llama``'s model (which must outlive it:
    :meth:`close` it first)."""

    def __init__(self, llama: Llama, model_id: str, n_threads: int) -> None:
        import llama_cpp

        self._lib: Any = llama_cpp
        self.model_id = model_id
        self.pooling = pooling_for(llama.metadata, model_id)
        trained = int(llama_cpp.llama_model_n_ctx_train(llama.model))
        self.n_ctx = min(EMBEDDING_CONTEXT, trained) if trained > 0 else EMBEDDING_CONTEXT
        self.n_embd = int(llama.n_embd())
        self._llama = llama
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_ctx
        params.n_ubatch = self.n_ctx  # a whole input in one micro-batch: pooling needs it
        params.n_seq_max = self.n_seq_max = min(
            self.n_ctx, int(llama_cpp.llama_max_parallel_sequences())
        )
        params.kv_unified = True  # as Llama(embedding=True) makes it: sequences share the cells
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.embeddings = True
        params.pooling_type = self.pooling
        params.no_perf = True
        # As llama-cpp-python's Llama sets it: llama.cpp's default (auto) turns flash attention
        # on here, which on this CPU made an input ~4x slower and changed its vector by 1e-2.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if ctx is None:
            raise GenerationError(
                f"llama.cpp could not make an embedding context for {model_id}",
                model=model_id,
                backend=BACKEND,
            )
        self._ctx: Any = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch: Any = llama_cpp.llama_batch_init(self.n_ctx, 0, self.n_seq_max)

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> tuple[list[list[int]], int]:
        """Each text's tokens (as ``Llama.embed`` makes them), and how many were cut to the
        context; :class:`InvalidRequest` naming the first that is too long without
        ``truncate``, before anything is computed."""
        tokens: list[list[int]] = []
        cut = 0
        for index, text in enumerate(texts):
            ids = self._llama.tokenize(text.encode("utf-8"))
            if len(ids) > self.n_ctx:
                if not truncate:
                    raise InvalidRequest(
                        f"embed: input[{index}] has {len(ids)} tokens, more than the"
                        f" {self.n_ctx} of {self.model_id}'s embedding context: shorten it,"
                        " or send truncate: true to cut it to fit",
                        model=self.model_id,
                        backend=BACKEND,
                    )
                ids = ids[: self.n_ctx]
                cut += 1
            tokens.append(ids)
        return tokens, cut

    def embed(
        self,
        tokens: Sequence[Sequence[int]],
        *,
        normalize: bool,
        between: Callable[[], None] = lambda: None,
    ) -> list[list[float]]:
        """One vector per token list, in order; ``between`` runs before each decode (it raises
        to stop)."""
        vectors: list[list[float]] = []
        group: list[Sequence[int]] = []
        size = 0
        for ids in tokens:
            if group and (size + len(ids) > self.n_ctx or len(group) >= self.n_seq_max):
                between()
                vectors += self._decode(group, len(vectors), normalize)
                group, size = [], 0
            group.append(ids)
            size += len(ids)
        if group:
            between()
            vectors += self._decode(group, len(vectors), normalize)
        self._lib.llama_memory_clear(self._memory, True)
        return vectors

    def _decode(
        self, group: Sequence[Sequence[int]], first: int, normalize: bool
    ) -> list[list[float]]:
        """The vectors of ``group`` (inputs ``first``... of the request), in one decode."""
        lib, batch = self._lib, self._batch
        lib.llama_memory_clear(self._memory, True)
        row = 0
        for seq, ids in enumerate(group):
            for position, token in enumerate(ids):
                batch.token[row] = token
                batch.pos[row] = position
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seq
                batch.logits[row] = True  # in embedding mode every token is an output
                row += 1
        batch.n_tokens = row
        code = lib.llama_decode(self._ctx, batch)
        last = first + len(group) - 1
        where = f"input[{first}]" if last == first else f"inputs[{first}..{last}]"
        if code != 0:
            raise GenerationError(
                f"llama.cpp could not embed {where} with {self.model_id}"
                f" (llama_decode returned {code})",
                model=self.model_id,
                backend=BACKEND,
            )
        vectors = []
        for seq in range(len(group)):
            pointer = lib.llama_get_embeddings_seq(self._ctx, seq)
            if not pointer:
                raise GenerationError(
                    f"llama.cpp returned no embedding for input[{first + seq}] with"
                    f" {self.model_id}",
                    model=self.model_id,
                    backend=BACKEND,
                )
            vector = list(pointer[: self.n_embd])
            vectors.append(l2_normalized(vector) if normalize else vector)
        return vectors

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
