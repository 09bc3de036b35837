"""``LM.score``: log-probabilities of given continuations, through the LM's machinery.

A scoring request goes through what a completion goes through: the response cache (its
key holds the continuations), the active budgets (one request each, retries counted),
retries of transient errors and tracking (one :class:`~lmforge.trace.LMCall` per request,
whose output is the best continuation). Only backends implementing
:class:`~lmforge.lm.types.ScoringBackend` can score.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import budget as _budget
from ..errors import BudgetExceededError, LMError, UsageError
from .types import LMRequest, LMResponse, ScoringBackend, Usage

if TYPE_CHECKING:
    from .lm import LM

__all__ = ["SCORE_PARAM", "ContinuationScores", "score_core", "scoring_backend", "scoring_request"]

#: The request parameter under which a scoring request carries its continuations (so that
#: cache keys and traces tell scoring requests apart from completions).
SCORE_PARAM = "score_continuations"


@dataclasses.dataclass(frozen=True, slots=True)
class ContinuationScores:
    """A backend's answer to a scoring request: each continuation's summed token
    log-probability (``values``, in the order asked) and the tokens the request used.
    (Here, not in :mod:`lmforge.lm.types`: only scoring code loads it.)"""

    values: tuple[float, ...]
    usage: Usage = Usage()  # noqa: RUF009 (a frozen dataclass: shared safely)


def scoring_backend(lm: LM, request: LMRequest) -> ScoringBackend | None:
    """``lm``'s backend when it can score ``request``, else ``None``."""
    backend = lm.backend
    if isinstance(backend, ScoringBackend) and backend.can_score(request):
        return backend
    return None


def scoring_request(request: LMRequest, continuations: Sequence[str]) -> LMRequest:
    """``request`` marked with the continuations it scores (for cache keys and traces)."""
    return dataclasses.replace(request, params={**request.params, SCORE_PARAM: list(continuations)})


async def score_core(
    lm: LM, request: LMRequest, continuations: Sequence[str], *, blocking: bool
) -> list[float]:
    """:meth:`LM.score` and :meth:`LM.ascore` (a :mod:`lmforge.steps` core)."""
    if not continuations:
        raise UsageError("LM.score needs at least one continuation to score")
    backend = scoring_backend(lm, request)
    if backend is None:
        raise UsageError(
            f"{lm.model} cannot score this request (its backend has no log-probabilities for "
            "given text); generate instead, or use a local/... or text-completion model"
        )
    started = time.perf_counter()
    keyed = scoring_request(request, continuations)
    cache = lm._usable_cache()
    cached = cache.get(keyed, lm.api_base) if cache is not None else None
    if cached is not None and cached.texts and cached.finish_reason == "score":
        scores = _decode(cached.texts[-1])
        if scores is not None and len(scores) == len(continuations):
            lm._record(keyed, dataclasses.replace(cached, cache_hit=True), started, None, 0)
            return scores
    retry, sent, spent = lm.retry, 0, 0.0
    while True:
        try:
            _budget.reserve(retry=sent > 0)
        except BudgetExceededError as exc:
            if sent:
                lm._record(keyed, None, started, exc, sent - 1)
            raise
        sent += 1
        began = retry.clock()
        try:
            if blocking:
                answer = backend.score(request, continuations)
            else:
                answer = await backend.ascore(request, continuations)
            break
        except LMError as exc:
            spent += retry.clock() - began
            # A backend that learnt from this error that it cannot score is not retried.
            wait = retry.next_wait(sent, exc, spent) if backend.can_score(request) else None
            if wait is None:
                lm._record(keyed, None, started, exc, sent - 1)
                raise
        if blocking:
            retry.sleep(wait)
        else:
            await retry.async_sleep(wait)
        spent += wait
    if not isinstance(answer, ContinuationScores):
        raise LMError(
            f"{lm.model}: the backend's score() returned {type(answer).__name__}, not "
            "ContinuationScores",
            model=lm.model,
        )
    scores = [float(s) for s in answer.values]
    if len(scores) != len(continuations):
        raise LMError(
            f"{lm.model}: the backend scored {len(scores)} continuation(s) of {len(continuations)}",
            model=lm.model,
        )
    response = lm._priced(_response(continuations, scores, answer.usage))
    _budget.charge(response.cost)
    if cache is not None:
        cache.put(keyed, response, lm.api_base)
    lm._record(keyed, response, started, None, sent - 1)
    return scores


def _response(continuations: Sequence[str], scores: list[float], usage: Usage) -> LMResponse:
    """The record of a scoring request: the best continuation, then the scores (JSON)."""
    import json

    best = max(range(len(scores)), key=scores.__getitem__)
    encoded = json.dumps([s if math.isfinite(s) else None for s in scores])
    return LMResponse(
        texts=(continuations[best], encoded),
        usage=usage,
        finish_reason="score",
    )


def _decode(text: str) -> list[float] | None:
    import json

    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, list):
        return None
    return [-math.inf if v is None else float(v) for v in values]
