"""Scoring continuations with an in-process llama.cpp model (``LocalBackend.score``).

The prompt is evaluated once (reusing whatever prefix of it the model's KV cache already
holds, as generation does), then each continuation's tokens are fed one by one from the
prompt's state; continuations sharing leading tokens share their evaluation. The model is
loaded without ``logits_all`` (its logit buffer would be ``n_ctx x vocab`` floats), so the
logits read are the last position's after each step. Call under the model's lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["score_tokens"]


def score_tokens(
    llama: Any, prompt: Sequence[int], continuations: Sequence[Sequence[int]]
) -> list[float]:
    """The sum of token log-probabilities of each of ``continuations`` after ``prompt``."""
    import llama_cpp
    import numpy as np

    n_vocab = int(llama.n_vocab())

    def log_probs() -> Any:
        pointer = llama_cpp.llama_get_logits_ith(llama.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float64)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    base = len(prompt)
    cached = _common_prefix(llama.input_ids[: llama.n_tokens], prompt)
    # At least the prompt's last token is evaluated again: its logits are the ones needed.
    llama.n_tokens = min(cached, base - 1)
    llama.eval(list(prompt[llama.n_tokens :]))
    # log-probability rows by the continuation tokens evaluated after the prompt
    rows: dict[tuple[int, ...], Any] = {(): log_probs()}
    scores: list[float] = []
    for tokens in continuations:
        total = 0.0
        for i, token in enumerate(tokens):
            key = tuple(tokens[:i])
            row = rows.get(key)
            if row is None:
                # The model holds prompt + tokens[:i-1]'s row was read: step back to the
                # longest evaluated prefix, then feed the missing tokens one at a time.
                held = tuple(int(t) for t in llama.input_ids[base : llama.n_tokens])
                keep = _common_prefix(held, key)
                llama.n_tokens = base + keep
                for j in range(keep, i):
                    llama.eval([key[j]])
                    rows[key[: j + 1]] = log_probs()
                row = rows[key]
            total += float(row[token])
        scores.append(total)
    return scores


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
