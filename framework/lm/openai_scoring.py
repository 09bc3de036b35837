"""Scoring continuations on OpenAI-compatible text-completion servers (vLLM and the like).

One ``/completions`` request carries every prompt-plus-continuation as a prompt list
with ``echo`` and ``logprobs``: the server returns the log-probability of each echoed
prompt token, and a continuation's score is the sum over the tokens that reach past the
shared prompt. The shared prompt is the same prefix of every prompt in the list, so a
server with prefix caching (vLLM) computes it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["parse_scores", "scoring_payload"]

# Parameters of a generation that mean nothing (or harm) when scoring echoed prompts.
_DROPPED = ("stop", "n", "structured_outputs", "guided_choice", "guided_regex", "logprobs")


def scoring_payload(payload: Mapping[str, Any], continuations: Sequence[str]) -> dict[str, Any]:
    """The ``/completions`` body scoring ``continuations`` after ``payload``'s prompt."""
    body = {k: v for k, v in payload.items() if k not in _DROPPED}
    prompt = str(payload["prompt"])
    body.update(
        prompt=[prompt + c for c in continuations],
        echo=True,
        logprobs=1,
        max_tokens=1,  # some servers refuse 0; the one generated token is not counted
        temperature=0,
    )
    return body


def parse_scores(data: Any, prompt: str, continuations: Sequence[str]) -> list[float]:
    """The summed log-probability of each continuation from an echoed completion document.

    A token counts when it ends past the shared prompt and starts before the end of its
    continuation (a token spanning the boundary is the continuation's).
    """
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != len(continuations):
        raise ValueError(f"{len(choices)} choices for {len(continuations)} prompts")
    scores: list[float] = []
    start = len(prompt)
    for choice, continuation in zip(choices, continuations, strict=True):
        logprobs = choice["logprobs"]
        tokens: list[str] = logprobs["tokens"]
        values: list[float | None] = logprobs["token_logprobs"]
        offsets: list[int] = logprobs["text_offset"]
        end = start + len(continuation)
        total = 0.0
        for token, value, offset in zip(tokens, values, offsets, strict=True):
            if offset < end and offset + len(token) > start:
                if value is None:  # the first token of a text has no log-probability
                    raise ValueError("a continuation token has no log-probability")
                total += float(value)
        scores.append(total)
    return scores
