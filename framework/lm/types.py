"""The one contract between lmforge and a language-model backend.

A backend implements ``complete(LMRequest) -> LMResponse`` and ``acomplete``; one that can
also score given continuations implements :class:`ScoringBackend` as well. Caching,
retries, usage accounting and tracing wrap a backend (see :class:`lmforge.LM`); they never
live inside one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .vision import content_text, digest_images, has_images

if TYPE_CHECKING:
    from .score_call import ContinuationScores

__all__ = [
    "Backend",
    "ConstraintSegment",
    "LMRequest",
    "LMResponse",
    "OutputConstraint",
    "ScoringBackend",
    "Usage",
]

Message = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ConstraintSegment:
    """One piece of a constrained output: fixed ``text``, or a value matching ``schema``.

    ``choices`` (for Literal/enum fields) is the closed set of allowed strings.
    """

    text: str | None = None
    schema: dict[str, Any] | None = None
    choices: tuple[str, ...] | None = None
    field: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True, slots=True)
class OutputConstraint:
    """A backend-neutral description of the text a completion must match.

    Adapters produce it from a signature; backends that can constrain decoding (llama.cpp
    grammars, vLLM structured outputs) compile it, others ignore it.
    """

    segments: tuple[ConstraintSegment, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.segments]


@dataclasses.dataclass(frozen=True, slots=True)
class LMRequest:
    """Everything that determines an LM's answer, and nothing secret.

    Exactly one of ``messages`` (chat) or ``prompt`` (text completion) is set.
    ``params`` holds sampling parameters (temperature, max_tokens, stop, n, seed, ...).
    """

    model: str
    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    response_format: dict[str, Any] | None = None
    constraint: OutputConstraint | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    rollout_id: int | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("LMRequest needs exactly one of messages or prompt")

    @property
    def mode(self) -> Literal["chat", "text"]:
        return "chat" if self.messages is not None else "text"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": list(self.messages) if self.messages is not None else None,
            "prompt": self.prompt,
            "params": self.params,
            "response_format": self.response_format,
            "constraint": self.constraint.to_json() if self.constraint else None,
            "tools": list(self.tools) if self.tools else None,
            "rollout_id": self.rollout_id,
        }

    def cache_key(self) -> str:
        """A stable hash of everything that changes the answer."""
        import hashlib  # imported on first use: keeps `import lmforge` cheap

        data = self.to_json()
        if has_images(self.messages):
            data["messages"] = digest_images(self.messages or ())
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def as_text(self) -> str:
        """The prompt as plain text (chat messages are joined role by role)."""
        if self.prompt is not None:
            return self.prompt
        parts = []
        for m in self.messages or ():
            content = m.get("content")
            text = content if isinstance(content, str) else content_text(content)
            parts.append(f"{m.get('role', 'user')}: {text}")
        return "\n\n".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclasses.dataclass(frozen=True, slots=True)
class LMResponse:
    """A backend's answer. ``texts`` has one entry per sampled choice (``n``)."""

    texts: tuple[str, ...]
    usage: Usage = Usage()
    model: str | None = None
    finish_reason: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None
    cost: float | None = None
    cache_hit: bool = False

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "texts": list(self.texts),
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
            "model": self.model,
            "finish_reason": self.finish_reason,
            "tool_calls": list(self.tool_calls) if self.tool_calls else None,
            "cost": self.cost,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, cache_hit: bool = False) -> LMResponse:
        prompt_tokens, completion_tokens = data.get("usage") or (0, 0)
        return cls(
            texts=tuple(data["texts"]),
            usage=Usage(int(prompt_tokens), int(completion_tokens)),
            model=data.get("model"),
            finish_reason=data.get("finish_reason"),
            tool_calls=tuple(data["tool_calls"]) if data.get("tool_calls") else None,
            cost=data.get("cost"),
            cache_hit=cache_hit,
        )


@runtime_checkable
class Backend(Protocol):
    """What an LM backend implements. Errors must be lmforge errors (``LMError`` ...)."""

    def complete(self, request: LMRequest) -> LMResponse: ...

    async def acomplete(self, request: LMRequest) -> LMResponse: ...


@runtime_checkable
class ScoringBackend(Protocol):
    """The optional scoring capability of a backend (label scoring of closed outputs).

    ``score`` returns, for each continuation, the sum of its tokens' log-probabilities
    when it follows the request's prompt (chat requests: the rendered chat prompt with the
    assistant's turn opened), and the tokens the request used. ``can_score`` says whether
    this request can be scored at all (a chat request to an endpoint without ``echo``,
    say); callers generate instead when it cannot. A backend may learn it cannot: after a
    server refuses a scoring request, ``can_score`` says no for that model.
    """

    def can_score(self, request: LMRequest) -> bool: ...

    def score(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores: ...

    async def ascore(
        self, request: LMRequest, continuations: Sequence[str]
    ) -> ContinuationScores: ...
