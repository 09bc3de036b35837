"""Grammar-constrained sampling for the local backend that stays fast on big vocabularies.

llama-cpp-python checks a grammar against every token of the vocabulary before each
sampling step. Gemma 3 has 262,144 tokens, which makes that check cost about a second per
generated token on a small CPU. This sampler does what llama.cpp's own tools do: rank the
model's candidates first, ask llama.cpp's grammar engine which of the best ones (plus the
end-of-generation tokens) are allowed, and pick among those; only when none of them is
allowed is the whole vocabulary checked. The grammar itself is llama.cpp's.

The sampler plugs into ``Llama.generate`` for one call (see :func:`generate_with`), so
prompt-prefix reuse, stop strings and usage accounting stay llama-cpp-python's.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ProviderError, UsageError

__all__ = ["GrammarSampler", "eog_tokens", "generate_with"]

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
CANDIDATES = 64


def eog_tokens(llama: Any) -> np.ndarray:
    """Every end-of-generation token id of ``llama``'s vocabulary."""
    import llama_cpp

    vocab = llama._model.vocab
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    ids = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    return np.asarray(ids or [llama.token_eos()], dtype=np.int32)


class GrammarSampler:
    """Samples one token at a time under a GBNF grammar (greedy when ``temperature`` is 0).

    Args:
        llama: the loaded ``llama_cpp.Llama``.
        gbnf: the grammar, with root rule ``root``.
        eog: the model's end-of-generation token ids (always checked as candidates).
        temperature, top_k, top_p, min_p: sampling settings, applied to allowed tokens.
        seed: the random seed for sampling (ignored when greedy).
    """

    def __init__(
        self,
        llama: Any,
        gbnf: str,
        *,
        eog: np.ndarray,
        temperature: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: int | None = None,
        candidates: int = CANDIDATES,
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        vocab = llama._model.vocab
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._grammar:
            raise UsageError(f"llama.cpp rejected the output grammar:\n{gbnf[:2000]}")
        self._eog = eog
        self._temperature = float(temperature)
        self._top_k = int(top_k)
        self._top_p = float(top_p)
        self._min_p = float(min_p)
        self._rng = np.random.default_rng(seed)
        self._candidates = max(1, min(int(candidates), self._n_vocab))

    def close(self) -> None:
        """Free the native grammar sampler (idempotent)."""
        if self._grammar:
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- the interface Llama.generate uses --------------------------------------------------

    def sample(self, ctx: Any, idx: int = -1) -> int:
        """The next token for the logits at ``idx`` of ``ctx``; the grammar advances."""
        pointer = self._lib.llama_get_logits_ith(ctx.ctx, idx)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        top = np.argpartition(logits, -self._candidates)[-self._candidates :]
        allowed = self._allowed(np.union1d(top, self._eog))
        if allowed.size == 0:
            allowed = self._allowed(np.arange(self._n_vocab, dtype=np.int32))
            if allowed.size == 0:
                raise ProviderError("the output grammar allows no further token")
        token = self._choose(allowed, logits)
        self._lib.llama_sampler_accept(self._grammar, token)
        return token

    # -- helpers ----------------------------------------------------------------------------

    def _allowed(self, ids: np.ndarray) -> np.ndarray:
        """The ids among ``ids`` the grammar accepts next (one native call)."""
        data = np.zeros(len(ids), dtype=_TOKEN_DATA)
        data["id"] = ids
        array = self._lib.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(self._lib.llama_token_data)),
            size=len(ids),
            selected=-1,
            sorted=False,
        )
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(array))
        return data["id"][np.isfinite(data["logit"])]

    def _choose(self, allowed: np.ndarray, logits: np.ndarray) -> int:
        scores = logits[allowed].astype(np.float64)
        if self._temperature <= 0 or allowed.size == 1:
            return int(allowed[int(np.argmax(scores))])
        order = np.argsort(-scores)
        if self._top_k > 0:
            order = order[: self._top_k]
        ids, scores = allowed[order], scores[order] / self._temperature
        probs = np.exp(scores - scores[0])
        probs /= probs.sum()
        keep = probs >= self._min_p * probs[0]
        cumulative = np.cumsum(probs)
        keep &= np.concatenate(([True], cumulative[:-1] < self._top_p))
        ids, probs = ids[keep], probs[keep] / probs[keep].sum()
        return int(self._rng.choice(ids, p=probs))


@contextlib.contextmanager
def generate_with(llama: Any, sampler: GrammarSampler) -> Iterator[None]:
    """Make ``llama``'s next generations sample with ``sampler`` (call under the model's
    lock; the model's own sampler chain is restored afterwards)."""
    llama._init_sampler = lambda **_settings: sampler
    try:
        yield
    finally:
        del llama._init_sampler
        llama._sampler = None
        sampler.close()
