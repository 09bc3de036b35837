"""``BestOfN`` and ``Refine``: resample a module until a reward reaches a threshold.

Each attempt after the first runs under :func:`lmforge.predict.request_config` with its own
``rollout_id`` (so the response cache does not hand back the same answer) and a sampling
``temperature``. Trace records point at the inner module's own predictors (Refine's advised
copies are mapped back to them), so optimizers can attribute them.

Only the attempt a call returns is a demonstration of the task: inside
:func:`rejected_attempts`, the records of every other attempt (and of Refine's feedback
calls) are collected, and optimizers that build demos from traces leave them out.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import lmforge as lf
from lmforge.predict import request_config
from lmforge.steps import run_blocking
from lmforge.trace import PredictorCall, Tracker, track

from ._checks import check_count, check_number
from ._spec import callable_ref, module_from_spec, module_spec, resolve_callable

__all__ = ["BestOfN", "Refine", "Reward", "reject", "rejected_attempts"]

Reward = Callable[[dict[str, Any], lf.Prediction], float]
_HINT = "pass reward= yourself: lf.load(path, program=BestOfN(module, n, reward=...))"

_rejected: ContextVar[set[int] | None] = ContextVar("lmforge_rejected_attempts", default=None)


@contextlib.contextmanager
def rejected_attempts() -> Iterator[set[int]]:
    """Collect the ``seq`` of every predictor record made in the block by an attempt that a
    resampling module (:class:`BestOfN`, :class:`Refine`) did not return, and by Refine's
    feedback step. A trace used as demos should leave those records out: they show
    outputs the reward rejected."""
    found: set[int] = set()
    token = _rejected.set(found)
    try:
        yield found
    finally:
        _rejected.reset(token)


def reject(records: Iterable[PredictorCall]) -> None:
    """Mark ``records`` as coming from attempts a call did not return (no-op outside
    :func:`rejected_attempts`)."""
    rejected = _rejected.get()
    if rejected is not None:
        rejected.update(record.seq for record in records)


class _Attempts:
    """Bookkeeping shared by the resampling modules: best so far, failures, stopping."""

    def __init__(self, owner: _Resampler) -> None:
        self.owner = owner
        self.best: lf.Prediction | None = None
        self.best_score = float("-inf")
        self.best_records: list[PredictorCall] = []
        self.failures = 0
        self.last_error: Exception | None = None
        self.records: list[PredictorCall] = []  # every predictor record of this call

    def failed(self, exc: Exception, tracker: Tracker) -> None:
        self.records.extend(tracker.predictions)
        if isinstance(exc, lf.UsageError | lf.BudgetExceededError):
            raise exc  # a wrong call or a spent budget: more attempts cannot help
        self.failures += 1
        self.last_error = exc
        if self.failures > self.owner.fail_count:
            raise exc

    def scored(self, prediction: lf.Prediction, score: float, tracker: Tracker) -> bool:
        """Keep ``prediction`` if it is the best yet; True when it reaches the threshold."""
        self.records.extend(tracker.predictions)
        if self.best is None or score > self.best_score:
            self.best, self.best_score = prediction, score
            self.best_records = list(tracker.predictions)
        return score >= self.owner.threshold

    def discard(self, tracker: Tracker) -> None:
        """Records that are never part of the returned attempt (Refine's feedback calls)."""
        self.records.extend(tracker.predictions)

    def result(self) -> lf.Prediction:
        if self.best is None:
            assert self.last_error is not None
            raise self.last_error
        kept = {id(record) for record in self.best_records}
        reject(r for r in self.records if id(r) not in kept)
        return self.best


class _Resampler(lf.Module, abc.ABC):
    """Runs ``module`` up to ``n`` times; subclasses say how the attempts go (``_run``)."""

    def __init__(
        self,
        module: lf.Module,
        n: int,
        reward: Reward,
        threshold: float,
        *,
        temperature: float = 1.0,
        fail_count: int | None = None,
    ) -> None:
        if not isinstance(module, lf.Module):
            raise lf.UsageError(
                f"{type(self).__name__} wraps an lf.Module, got {type(module).__name__}"
            )
        name = type(self).__name__
        self.n = check_count(n, name, "n", least=1)
        if not callable(reward):
            raise lf.UsageError(
                f"{name}(reward=...) must be a function reward(inputs, prediction) -> float, "
                f"got {reward!r}"
            )
        self.module = module
        self.reward = reward
        self.threshold = check_number(threshold, f"{name}(threshold=...)")
        self.temperature = check_number(temperature, f"{name}(temperature=...)")
        self.fail_count = (
            self.n if fail_count is None else check_count(fail_count, name, "fail_count", least=0)
        )

    def forward(self, **inputs: Any) -> lf.Prediction:
        return run_blocking(self._run(inputs, blocking=True))

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        return await self._run(inputs, blocking=False)

    @abc.abstractmethod
    async def _run(self, inputs: dict[str, Any], *, blocking: bool) -> lf.Prediction:
        """The attempts of one call (a :mod:`lmforge.steps` core run by both twins)."""

    @property
    def signature(self) -> lf.Signature | None:
        return getattr(self.module, "signature", None)

    def _options(self, attempt: int) -> dict[str, Any]:
        """Attempt 0 is the module's ordinary call; later ones sample fresh rollouts."""
        return {} if attempt == 0 else {"rollout_id": attempt, "temperature": self.temperature}

    def _score(self, inputs: Mapping[str, Any], prediction: lf.Prediction) -> float:
        """The reward of one attempt; a reward that raises or returns a non-number is a
        :class:`lmforge.UsageError` naming the function (the original error chained)."""
        name = f"{type(self).__name__} reward function {_describe(self.reward)}"
        try:
            value = self.reward(dict(inputs), prediction)
        except (lf.BudgetExceededError, lf.LMError):
            raise  # a spent budget or a failed LM call inside the reward: not its bug
        except Exception as exc:
            raise lf.UsageError(
                f"{name} raised {type(exc).__name__}: {exc}; fix the reward so it returns a "
                "number for every prediction"
            ) from exc
        return check_number(value, f"the value returned by {name}")

    def spec_config(self) -> dict[str, Any]:
        return {
            "module": module_spec(self.module),
            "n": self.n,
            "reward": callable_ref(self.reward),
            "threshold": self.threshold,
            "temperature": self.temperature,
            "fail_count": self.fail_count,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> _Resampler:
        return cls(
            module_from_spec(config["module"], what="module"),
            int(config["n"]),
            resolve_callable(str(config["reward"]), what="reward function", hint=_HINT),
            float(config["threshold"]),
            temperature=float(config.get("temperature", 1.0)),
            fail_count=config.get("fail_count"),
        )


class BestOfN(_Resampler):
    """Run ``module`` up to ``n`` times and return the prediction with the highest reward,
    stopping early at the first one whose reward reaches ``threshold``.

    ``reward(inputs, prediction) -> float`` scores an attempt. Attempts that raise are
    skipped; more than ``fail_count`` of them (default ``n``) re-raises the last error, as
    does having no successful attempt at all. Usage errors and a spent budget are raised at
    once. A reward that raises, or returns something that is not a number, is a
    :class:`lmforge.UsageError` naming it (its own error chained as the cause); an LM error
    or a spent budget inside the reward propagates unchanged. Rewards are saved by import
    path, so use a module-level function.
    """

    async def _run(self, inputs: dict[str, Any], *, blocking: bool) -> lf.Prediction:
        attempts = _Attempts(self)
        for attempt in range(self.n):
            with track() as tracker:
                try:
                    with request_config(**self._options(attempt)):
                        prediction = await _call(self.module, inputs, blocking)
                except Exception as exc:
                    attempts.failed(exc, tracker)
                    continue
            if attempts.scored(prediction, self._score(inputs, prediction), tracker):
                break
        return attempts.result()


class Refine(_Resampler):
    """Like :class:`BestOfN`, but after an attempt falls short an LM step (``feedback``)
    writes advice from the attempt and its reward, and the next attempt runs with that
    advice appended to the instructions of each of the module's predictors (on a copy, so
    the module itself never changes).
    """

    def __init__(
        self,
        module: lf.Module,
        n: int,
        reward: Reward,
        threshold: float,
        *,
        temperature: float = 1.0,
        fail_count: int | None = None,
    ) -> None:
        super().__init__(
            module, n, reward, threshold, temperature=temperature, fail_count=fail_count
        )
        self.feedback = lf.Predict(_feedback_signature())

    async def _run(self, inputs: dict[str, Any], *, blocking: bool) -> lf.Prediction:
        attempts = _Attempts(self)
        advice: str | None = None
        for attempt in range(self.n):
            target, origin = self._advised(advice)
            with track() as tracker:
                try:
                    with request_config(**self._options(attempt)):
                        prediction = await _call(target, inputs, blocking)
                except Exception as exc:
                    attempts.failed(exc, _attributed(tracker, origin))
                    continue
            score = self._score(inputs, prediction)
            if attempts.scored(prediction, score, _attributed(tracker, origin)):
                break
            if attempt == self.n - 1:
                break
            feedback = self._feedback_inputs(inputs, prediction, score)
            with track() as tracker:
                try:
                    reply = await _call(self.feedback, feedback, blocking)
                except lf.ParseError:
                    reply = None  # no usable advice this time: retry with the previous advice
            attempts.discard(tracker)
            if reply is not None:
                advice = self._advice(reply) or advice
        return attempts.result()

    def _advised(self, advice: str | None) -> tuple[lf.Module, dict[int, lf.Predict]]:
        """The module to run (a copy with ``advice`` in its instructions, when there is
        advice) and, by ``id``, the module's own predictor behind each copied one."""
        if advice is None:
            return self.module, {}
        copy = self.module.deepcopy()
        origin: dict[int, lf.Predict] = {}
        for predictor, own in zip(copy.predictors(), self.module.predictors(), strict=True):
            signature = predictor.signature
            predictor.signature = signature.with_instructions(
                f"{signature.instructions}\n\nAdvice from reviewing an earlier attempt: {advice}"
            )
            origin[id(predictor)] = own
        return copy, origin

    def _feedback_inputs(
        self, inputs: Mapping[str, Any], prediction: lf.Prediction, score: float
    ) -> dict[str, Any]:
        return {
            "program_inputs": _as_json(inputs),
            "program_outputs": _as_json(prediction),
            "reward": score,
            "threshold": self.threshold,
        }

    @staticmethod
    def _advice(prediction: lf.Prediction) -> str | None:
        advice = str(prediction.get("advice") or "").strip()
        return advice or None


async def _call(module: lf.Module, inputs: Mapping[str, Any], blocking: bool) -> lf.Prediction:
    """One call of ``module``: the step every attempt blocks or waits on."""
    return module(**inputs) if blocking else await module.acall(**inputs)


def _feedback_signature() -> lf.Signature:
    return lf.Signature.parse(
        "program_inputs, program_outputs, reward: float, threshold: float -> advice",
        instructions=(
            "A program answered the inputs below with the outputs below, and a reward function "
            "scored the answer below the threshold. Write short, concrete advice that will help "
            "the program's next attempt reach the threshold. Do not repeat the inputs."
        ),
    )


def _as_json(values: Mapping[str, Any]) -> str:
    return json.dumps(dict(values), ensure_ascii=False, default=str)


def _attributed(tracker: Tracker, origin: Mapping[int, lf.Predict]) -> Tracker:
    """Point the records of an advised copy's predictors at the module's own predictors,
    so traces (demos, per-predictor metrics) name the predictor the program has."""
    if origin:
        for record in tracker.predictions:
            own = origin.get(id(record.predictor))
            if own is not None:
                record.predictor = own
    return tracker


def _describe(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return f"{name!r}"
