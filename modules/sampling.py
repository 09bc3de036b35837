"""``BestOfN`` and ``Refine``: resample a module until a reward reaches a threshold.

Each attempt after the first runs under :func:`lmforge.predict.request_config` with its own
``rollout_id`` (so the response cache does not hand back the same answer) and a sampling
``temperature``. The inner module is not copied for that, so trace records point at its own
predictors and optimizers can attribute them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import lmforge as lf
from lmforge.predict import request_config

from ._spec import callable_ref, module_from_spec, module_spec, resolve_callable

__all__ = ["BestOfN", "Refine", "Reward"]

Reward = Callable[[dict[str, Any], lf.Prediction], float]
_HINT = "pass reward= yourself: lf.load(path, program=BestOfN(module, n, reward=...))"


class _Attempts:
    """Bookkeeping shared by the resampling modules: best so far, failures, stopping."""

    def __init__(self, owner: _Resampler) -> None:
        self.owner = owner
        self.best: lf.Prediction | None = None
        self.best_score = float("-inf")
        self.failures = 0
        self.last_error: Exception | None = None

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, lf.UsageError | lf.BudgetExceededError):
            raise exc  # a wrong call or a spent budget: more attempts cannot help
        self.failures += 1
        self.last_error = exc
        if self.failures > self.owner.fail_count:
            raise exc

    def scored(self, prediction: lf.Prediction, score: float) -> bool:
        """Keep ``prediction`` if it is the best yet; True when it reaches the threshold."""
        if self.best is None or score > self.best_score:
            self.best, self.best_score = prediction, score
        return score >= self.owner.threshold

    def result(self) -> lf.Prediction:
        if self.best is None:
            assert self.last_error is not None
            raise self.last_error
        return self.best


class _Resampler(lf.Module):
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
        if n < 1:
            raise lf.UsageError(f"{type(self).__name__} needs n >= 1 attempts")
        if not callable(reward):
            raise lf.UsageError("reward must be a function reward(inputs, prediction) -> float")
        self.module = module
        self.n = n
        self.reward = reward
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.fail_count = n if fail_count is None else int(fail_count)

    @property
    def signature(self) -> lf.Signature | None:
        return getattr(self.module, "signature", None)

    def _options(self, attempt: int) -> dict[str, Any]:
        """Attempt 0 is the module's ordinary call; later ones sample fresh rollouts."""
        return {} if attempt == 0 else {"rollout_id": attempt, "temperature": self.temperature}

    def _score(self, inputs: Mapping[str, Any], prediction: lf.Prediction) -> float:
        return float(self.reward(dict(inputs), prediction))

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
    once. Rewards are saved by import path, so use a module-level function.
    """

    def forward(self, **inputs: Any) -> lf.Prediction:
        attempts = _Attempts(self)
        for attempt in range(self.n):
            try:
                with request_config(**self._options(attempt)):
                    prediction = self.module(**inputs)
            except Exception as exc:
                attempts.failed(exc)
                continue
            if attempts.scored(prediction, self._score(inputs, prediction)):
                break
        return attempts.result()

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        attempts = _Attempts(self)
        for attempt in range(self.n):
            try:
                with request_config(**self._options(attempt)):
                    prediction = await self.module.acall(**inputs)
            except Exception as exc:
                attempts.failed(exc)
                continue
            if attempts.scored(prediction, self._score(inputs, prediction)):
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

    def forward(self, **inputs: Any) -> lf.Prediction:
        attempts = _Attempts(self)
        advice: str | None = None
        for attempt in range(self.n):
            target = self._advised(advice)
            try:
                with request_config(**self._options(attempt)):
                    prediction = target(**inputs)
            except Exception as exc:
                attempts.failed(exc)
                continue
            score = self._score(inputs, prediction)
            if attempts.scored(prediction, score) or attempt == self.n - 1:
                break
            try:
                reply = self.feedback(**self._feedback_inputs(inputs, prediction, score))
            except lf.ParseError:
                continue  # no usable advice this time: retry with the previous advice
            advice = self._advice(reply) or advice
        return attempts.result()

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        attempts = _Attempts(self)
        advice: str | None = None
        for attempt in range(self.n):
            target = self._advised(advice)
            try:
                with request_config(**self._options(attempt)):
                    prediction = await target.acall(**inputs)
            except Exception as exc:
                attempts.failed(exc)
                continue
            score = self._score(inputs, prediction)
            if attempts.scored(prediction, score) or attempt == self.n - 1:
                break
            try:
                reply = await self.feedback.acall(
                    **self._feedback_inputs(inputs, prediction, score)
                )
            except lf.ParseError:
                continue  # no usable advice this time: retry with the previous advice
            advice = self._advice(reply) or advice
        return attempts.result()

    def _advised(self, advice: str | None) -> lf.Module:
        if advice is None:
            return self.module
        copy = self.module.deepcopy()
        for predictor in copy.predictors():
            signature = predictor.signature
            predictor.signature = signature.with_instructions(
                f"{signature.instructions}\n\nAdvice from reviewing an earlier attempt: {advice}"
            )
        return copy

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
