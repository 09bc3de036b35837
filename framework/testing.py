"""Test doubles that speak through the real adapters, cache and tracing.

``ScriptedLM`` replies from a script (in order, or by matching the prompt),
``DummyLM`` answers with output field values written in whichever adapter's format the
call uses, and ``FunctionLM`` calls a Python function of the request. All are real
:class:`lmforge.LM` objects with fake backends, so everything above the backend runs for
real.
``block_network()`` makes any real provider call fail fast inside a test.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Literal

from .errors import UsageError
from .lm.lm import LM
from .lm.profiles import ModelProfile
from .lm.score_call import ContinuationScores
from .lm.types import LMRequest, LMResponse, Usage

Scores = Mapping[str, float] | Callable[[LMRequest, tuple[str, ...]], Sequence[float]]

__all__ = [
    "DummyLM",
    "FunctionLM",
    "ScoringLM",
    "ScriptedLM",
    "block_network",
    "network_blocked",
]

Reply = str | LMResponse | BaseException
_blocked: ContextVar[bool] = ContextVar("lmforge_network_blocked", default=False)


def network_blocked() -> bool:
    import os

    return _blocked.get() or os.environ.get("LMFORGE_BLOCK_NETWORK") == "1"


@contextlib.contextmanager
def block_network() -> Iterator[None]:
    """Inside the block, real provider backends raise instead of calling out."""
    token = _blocked.set(True)
    try:
        yield
    finally:
        _blocked.reset(token)


def _as_response(reply: Reply, request: LMRequest) -> LMResponse:
    if isinstance(reply, BaseException):
        raise reply
    if isinstance(reply, LMResponse):
        return reply
    if not isinstance(reply, str):
        raise UsageError(
            f"a fake LM reply must be a str, LMResponse or exception, got {type(reply).__name__}"
        )
    n = int(request.params.get("n", 1) or 1)
    prompt_tokens = len(request.as_text().split())
    return LMResponse(
        texts=(reply,) * n, usage=Usage(prompt_tokens, len(reply.split())), model=request.model
    )


class _ScriptBackend:
    """Picks each request's script entry, in order or by matching the last message;
    ``render`` turns the entry into a reply (default: the entry is the reply)."""

    def __init__(
        self,
        replies: Sequence[Any] | Mapping[str, Any],
        cycle: bool,
        *,
        owner: str = "ScriptedLM",
        render: Callable[[Any], Reply] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._ordered: list[Any] | None = None
        self._matched: list[tuple[re.Pattern[str], Any]] | None = None
        if isinstance(replies, Mapping):
            self._matched = [
                (re.compile(pattern, re.S), reply) for pattern, reply in replies.items()
            ]
        else:
            self._ordered = list(replies)
        self._cycle = cycle
        self._owner = owner
        self._render = render
        self.calls: list[LMRequest] = []
        self._index = 0

    def complete(self, request: LMRequest) -> LMResponse:
        with self._lock:
            self.calls.append(request)
            entry = self._pick(request)
        reply = self._render(entry) if self._render is not None else entry
        return _as_response(reply, request)

    async def acomplete(self, request: LMRequest) -> LMResponse:
        return self.complete(request)

    def _pick(self, request: LMRequest) -> Any:
        if self._matched is not None:
            # Match against the last message: that is where a call's own inputs are.
            text = (
                request.prompt
                if request.prompt is not None
                else str((request.messages or ({},))[-1].get("content", ""))
            )
            for pattern, reply in self._matched:
                if pattern.search(text):
                    return reply
            raise UsageError(f"{self._owner} has no reply matching this prompt:\n{text[-500:]}")
        assert self._ordered is not None
        if self._index >= len(self._ordered):
            if not self._cycle or not self._ordered:
                raise UsageError(
                    f"{self._owner} ran out of replies after {len(self._ordered)} call(s); "
                    "give it one reply per call (or cycle=True)"
                )
            self._index = 0
        reply = self._ordered[self._index]
        self._index += 1
        return reply


class _FunctionBackend:
    def __init__(self, func: Callable[[LMRequest], Reply | Awaitable[Reply]]) -> None:
        self._func = func
        self.calls: list[LMRequest] = []
        self._lock = threading.Lock()

    def complete(self, request: LMRequest) -> LMResponse:
        with self._lock:
            self.calls.append(request)
        result = self._func(request)
        if isinstance(result, Awaitable):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # never awaited: close it so Python does not warn
            raise UsageError("this FunctionLM's function is async; call the program with acall()")
        return _as_response(result, request)

    async def acomplete(self, request: LMRequest) -> LMResponse:
        with self._lock:
            self.calls.append(request)
        result = self._func(request)
        if isinstance(result, Awaitable):
            result = await result
        return _as_response(result, request)


_CHAT = ModelProfile()
_BASE = ModelProfile(chat_template=False, structured_output="grammar", default_adapter="completion")


def _profile(kind: Literal["chat", "text"], profile: ModelProfile | None) -> ModelProfile:
    return profile or (_CHAT if kind == "chat" else _BASE)


class ScriptedLM(LM):
    """An LM that replies from a script.

    ``ScriptedLM(["first reply", "second reply"])`` answers in order;
    ``ScriptedLM({"refund": "[[ ## team ## ]]\\nbilling"})`` answers with the first reply
    whose regex matches the prompt's last message. Exceptions in the script are raised.
    ``model_type="text"`` makes it behave like a base model (completion adapter).
    """

    def __init__(
        self,
        replies: Sequence[Reply] | Mapping[str, Reply],
        *,
        cycle: bool = False,
        model: str = "test/scripted",
        model_type: Literal["chat", "text"] = "chat",
        profile: ModelProfile | None = None,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        self.script = self._script_backend(replies, cycle)
        super().__init__(
            model,
            model_type=model_type,
            backend=self.script,
            cache=cache,
            profile=_profile(model_type, profile),
            **kwargs,
        )

    def _script_backend(self, replies: Any, cycle: bool) -> _ScriptBackend:
        return _ScriptBackend(replies, cycle)

    @property
    def calls(self) -> list[LMRequest]:
        """Every request the backend received (cache hits excluded)."""
        return self.script.calls


class FunctionLM(LM):
    """An LM whose replies come from ``func(request)`` (sync or async).

    The function returns a string, an ``LMResponse``, or raises/returns an exception.
    """

    def __init__(
        self,
        func: Callable[[LMRequest], Reply | Awaitable[Reply]],
        *,
        model: str = "test/function",
        model_type: Literal["chat", "text"] = "chat",
        profile: ModelProfile | None = None,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        self.function = _FunctionBackend(func)
        super().__init__(
            model,
            model_type=model_type,
            backend=self.function,
            cache=cache,
            profile=_profile(model_type, profile),
            **kwargs,
        )

    @property
    def calls(self) -> list[LMRequest]:
        return self.function.calls


#: What DummyLM writes for a text output field its answer does not give (a
#: ChainOfThought's reasoning, say), so tests need only name the fields they check.
DEFAULT_TEXT = "Not supplied for this call."


def _dummy_reply(answer: Any) -> Reply:
    """``answer`` (a dict of output field values) in the format of the adapter of the
    ``Predict`` call being made."""
    from .predict import current_call

    if isinstance(answer, BaseException):
        return answer
    if not isinstance(answer, Mapping):
        raise UsageError(
            f"DummyLM answers are dicts of output field values, e.g. {{'answer': '4'}}; "
            f"got {type(answer).__name__}"
        )
    call = current_call()
    if call is None:
        raise UsageError(
            "DummyLM answers lf.Predict calls (it writes their adapter's format); "
            "for a raw lm(...) call use ScriptedLM with reply text"
        )
    adapter, signature = call
    unknown = sorted(set(answer) - {f.name for f in signature.output_fields})
    if unknown:
        raise UsageError(
            f"DummyLM answer has field(s) {unknown} that {signature!r} does not output; "
            f"its outputs are {[f.name for f in signature.output_fields]}"
        )
    outputs = dict(answer)
    for field in signature.output_fields:
        if field.name not in outputs:
            if field.annotation is not str:
                raise UsageError(
                    f"DummyLM answer {dict(answer)!r} lacks the output field {field.name!r} "
                    f"({field.type_name}); add it to the answer"
                )
            outputs[field.name] = DEFAULT_TEXT
    return adapter.format_reply(signature, outputs)


class DummyLM(ScriptedLM):
    """An LM whose answers are output field values, written in whichever adapter's format
    the call uses (chat markers, JSON, or completion ``Field: value`` lines).

    ``DummyLM([{"answer": "4"}, {"answer": "5"}])`` answers calls in order;
    ``DummyLM({"What is 2+2?": {"answer": "4"}})`` answers with the first entry whose key
    appears (as plain text) in the prompt's last message. Text output fields an answer
    leaves out (a ChainOfThought's ``reasoning``) get :data:`DEFAULT_TEXT`. An exception
    as an answer is raised. ``model_type="text"`` makes it a base model (completion adapter).
    """

    def __init__(
        self,
        answers: Sequence[Mapping[str, Any] | BaseException]
        | Mapping[str, Mapping[str, Any] | BaseException],
        *,
        cycle: bool = False,
        model: str = "test/dummy",
        model_type: Literal["chat", "text"] = "chat",
        profile: ModelProfile | None = None,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            answers,  # type: ignore[arg-type]
            cycle=cycle,
            model=model,
            model_type=model_type,
            profile=profile,
            cache=cache,
            **kwargs,
        )

    def _script_backend(self, replies: Any, cycle: bool) -> _ScriptBackend:
        if isinstance(replies, Mapping):  # keys are plain text, matched literally
            replies = {re.escape(key): answer for key, answer in replies.items()}
        return _ScriptBackend(replies, cycle, owner="DummyLM", render=_dummy_reply)


#: The log-probability :class:`ScoringLM` gives a continuation its table does not name.
UNLISTED_SCORE = -50.0


class _ScoreBackend(_ScriptBackend):
    """A script backend that also scores continuations (``ScoringBackend``)."""

    def __init__(self, replies: Any, cycle: bool, scores: Scores, scorable: bool) -> None:
        super().__init__(replies, cycle, owner="ScoringLM")
        self._scores = scores
        self._scorable = scorable
        self.scored: list[tuple[LMRequest, tuple[str, ...]]] = []

    def can_score(self, request: LMRequest) -> bool:
        return self._scorable

    def score(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        options = tuple(continuations)
        with self._lock:
            self.scored.append((request, options))
        if callable(self._scores):
            values = [float(v) for v in self._scores(request, options)]
            if len(values) != len(options):
                raise UsageError(
                    f"the ScoringLM score function returned {len(values)} score(s) for "
                    f"{len(options)} continuation(s)"
                )
        else:
            values = [_table_score(self._scores, text) for text in options]
        # One token per word of the prompt and of each continuation: enough to see usage.
        read = len(request.as_text().split()) + sum(len(text.split()) for text in options)
        return ContinuationScores(tuple(values), Usage(read, 0))

    async def ascore(self, request: LMRequest, continuations: Sequence[str]) -> ContinuationScores:
        return self.score(request, continuations)


def _table_score(table: Mapping[str, float], continuation: str) -> float:
    """The score of the longest key of ``table`` found in ``continuation``."""
    found = [key for key in table if key in continuation]
    return float(table[max(found, key=len)]) if found else UNLISTED_SCORE


class ScoringLM(LM):
    """An LM whose backend scores continuations (label scoring) and replies from a script.

    ``ScoringLM({"billing": -0.2, "sales": -1.9})`` gives each continuation the
    log-probability of the longest key it contains (others get :data:`UNLISTED_SCORE`);
    ``ScoringLM(lambda request, continuations: [...])`` computes them. ``replies`` answer
    generated calls as :class:`ScriptedLM`'s do; ``scorable=False`` makes a backend that
    cannot score (callers fall back to generation). ``scored`` lists each scoring request
    with its continuations.
    """

    def __init__(
        self,
        scores: Scores,
        *,
        replies: Sequence[Reply] | Mapping[str, Reply] = (),
        cycle: bool = False,
        scorable: bool = True,
        model: str = "test/scoring",
        model_type: Literal["chat", "text"] = "text",
        profile: ModelProfile | None = None,
        cache: Any = False,
        **kwargs: Any,
    ) -> None:
        self.script = _ScoreBackend(replies, cycle, scores, scorable)
        super().__init__(
            model,
            model_type=model_type,
            backend=self.script,
            cache=cache,
            profile=_profile(model_type, profile),
            **kwargs,
        )

    @property
    def calls(self) -> list[LMRequest]:
        """Every generation request the backend received (cache hits excluded)."""
        return self.script.calls

    @property
    def scored(self) -> list[tuple[LMRequest, tuple[str, ...]]]:
        """Every scoring request the backend received, with its continuations."""
        return self.script.scored
