"""``Confidence``: give an open-ended program's answers a confidence in [0, 1].

Two ways, chosen when the program is built:

- self-consistency (default): the module runs ``samples`` times (the first call as
  configured, the others at ``temperature`` with distinct rollout ids so the response cache
  does not collapse them), answers with the majority, and its confidence is the share of
  samples agreeing with it. Cost: ``samples`` x the module's LM calls per answer.
- a judge: ``judge=lf.metrics.Judge("question, answer -> correct: bool")`` scores the one
  answer without gold labels (its signature may only name inputs and outputs); the
  confidence is the judge's score. Cost: one judge call per answer. A judge that fails
  (LM error, unparsable verdict) leaves the confidence unknown (``None``) instead of
  failing the answer.

Closed outputs (Literal, enum, bool) get a confidence from label log-probabilities instead;
this module is for everything else. Calibrated lights come from :mod:`lmforge.lights`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lmforge as lf
from lmforge.errors import LMError, ParseError
from lmforge.metrics import Judge
from lmforge.trace import Tracker

from ._checks import check_count
from ._spec import module_from_spec
from .ensemble import Majority, normalize_answer

__all__ = ["Confidence"]


class Confidence(Majority):
    """Wrap ``module`` so that every prediction carries ``confidence`` (see the module
    docstring). ``samples`` defaults to 5 (1 with a ``judge``); ``field`` (default: the
    last output field) is the answer compared between samples."""

    def __init__(
        self,
        module: lf.Module,
        samples: int | None = None,
        *,
        field: str | None = None,
        temperature: float = 1.0,
        judge: Judge | None = None,
    ) -> None:
        if judge is not None and not isinstance(judge, Judge):
            raise lf.UsageError(
                f"Confidence(judge=...) must be an lf.metrics.Judge, got {type(judge).__name__}"
            )
        count = (1 if judge is not None else 5) if samples is None else samples
        count = check_count(count, "Confidence", "samples", least=1)
        if judge is None and count < 2:
            raise lf.UsageError(
                "Confidence needs samples >= 2 to measure agreement (or pass judge=...)"
            )
        super().__init__(module, count, field=field, temperature=temperature)
        # Not an lf.Module attribute walk target: optimizers never tune the judge.
        self._judge = judge

    @property
    def judge(self) -> Judge | None:
        return self._judge

    def forward(self, **inputs: Any) -> lf.Prediction:
        prediction = super().forward(**inputs)
        if self._judge is not None:
            try:
                prediction.confidence = self._judge(lf.Example(inputs), prediction)
            except (LMError, ParseError):
                prediction.confidence = None
        return prediction

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        prediction = await super().aforward(**inputs)
        if self._judge is not None:
            try:
                prediction.confidence = await self._judge.acall(lf.Example(inputs), prediction)
            except (LMError, ParseError):
                prediction.confidence = None
        return prediction

    def _vote(self, samples: list[tuple[lf.Prediction, Tracker]]) -> lf.Prediction:
        result = super()._vote(samples)
        if self._judge is None:
            result.confidence = _agreement(result, self._field())
        return result

    def spec_config(self) -> dict[str, Any]:
        config = super().spec_config()
        config["samples"] = config.pop("n")
        if self._judge is not None:
            config["judge"] = _judge_spec(self._judge)
        return config

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Confidence:
        judge = _judge_from_spec(config["judge"]) if config.get("judge") else None
        return cls(
            module_from_spec(config["module"]),
            int(config.get("samples", 5)),
            field=config.get("field"),
            temperature=float(config.get("temperature", 1.0)),
            judge=judge,
        )


def _agreement(result: lf.Prediction, field: str | None) -> float:
    """The share of ``result``'s sampled candidates whose ``field`` agrees with its own
    (a sample without an answer counts against it)."""
    candidates = result.completions
    name = field or list(candidates[0])[-1]
    chosen = normalize_answer(result.get(name))
    if chosen is None:
        return 0.0
    agreeing = sum(1 for c in candidates if normalize_answer(c.get(name)) == chosen)
    return agreeing / len(candidates)


def _judge_spec(judge: Judge) -> dict[str, Any]:
    if judge.inputs:
        raise lf.UsageError(
            "a Confidence judge with inputs={...} functions cannot be saved; name the judge's "
            "inputs after the program's fields instead, or pass program= to lf.load"
        )
    return {"predictor": judge.predict.dump_state(), "scale": judge.scale, "name": judge.name}


def _judge_from_spec(spec: Mapping[str, Any]) -> Judge:
    state = spec["predictor"]
    scale = spec.get("scale")
    judge = Judge(
        lf.Signature.from_json(state["signature"]),
        scale=(float(scale[0]), float(scale[1])) if scale else None,
        name=str(spec.get("name") or "judge"),
    )
    judge.predict.apply_state(judge.predict.parsed_state(state))
    return judge
