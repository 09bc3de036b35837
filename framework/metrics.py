"""Built-in metrics: ``metric(example, prediction, trace=None) -> float | bool``.

``exact_match``, ``f1`` and ``contains`` compare the example's label fields (every key
that is not an input) with the prediction's fields of the same names; pass ``fields=`` to
choose. Text is normalised first (case, punctuation, articles, whitespace). A label that
is a list of acceptable answers (``answer=["Paris", "paris, france"]``) scores the best
match among them.
:class:`Judge` asks an LM, through a signature, to grade a prediction.
"""

from __future__ import annotations

import collections
import enum
import functools
import inspect
import json
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .errors import ParseError, UsageError
from .example import Example, Prediction

__all__ = [
    "BUILTIN",
    "F1",
    "Contains",
    "ExactMatch",
    "Judge",
    "call_metric",
    "contains",
    "exact_match",
    "f1",
    "metric_name",
    "normalize",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(value: Any) -> str:
    """Lower-case, drop punctuation and English articles, collapse whitespace."""
    text = _text(value).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


class _FieldMetric:
    """Shared by the field-comparing metrics: picks which fields to compare."""

    name = "metric"

    def __init__(
        self, fields: str | Sequence[str] | None = None, *, normalized: bool = True
    ) -> None:
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields) if fields else None
        self.normalized = normalized

    def _pairs(self, example: Example, prediction: Mapping[str, Any]) -> list[tuple[Any, Any]]:
        if self.fields is not None:
            names = list(self.fields)
        else:
            labels = example.labels() if isinstance(example, Example) else example
            names = [k for k in labels if k in prediction]
            if not names:
                raise UsageError(
                    f"{self.name}: the prediction has none of the example's label fields "
                    f"{sorted(labels)} (it has {sorted(prediction)}); pass fields=[...]"
                )
        for name in names:
            if name not in example:
                raise UsageError(
                    f"{self.name}: the example has no label field {name!r}; it has "
                    f"{sorted(example)}"
                )
            if name not in prediction:
                raise UsageError(
                    f"{self.name}: the prediction has no field {name!r}; it has "
                    f"{sorted(prediction)}"
                )
        return [(example[n], prediction[n]) for n in names]

    def _norm(self, value: Any) -> str:
        return normalize(value) if self.normalized else _text(value).strip()

    def _best(self, gold: Any, pred: Any, score: Callable[[str, str], float]) -> float:
        """``score`` of the normalised texts; a list of gold answers (when the prediction
        is not a list itself) scores its best match."""
        answer = self._norm(pred)
        if isinstance(gold, list | tuple) and gold and not isinstance(pred, list | tuple):
            return max(score(self._norm(option), answer) for option in gold)
        return score(self._norm(gold), answer)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fields={self.fields})"


class ExactMatch(_FieldMetric):
    """1.0 when every compared field matches the label exactly (after normalisation)."""

    name = "exact_match"

    def __call__(self, example: Example, prediction: Prediction, trace: Any = None) -> bool:
        return all(
            self._best(gold, pred, lambda g, p: float(g == p)) == 1.0
            for gold, pred in self._pairs(example, prediction)
        )


class F1(_FieldMetric):
    """Token-overlap F1 between label and prediction, averaged over compared fields."""

    name = "f1"

    def __call__(self, example: Example, prediction: Prediction, trace: Any = None) -> float:
        pairs = self._pairs(example, prediction)
        return sum(self._best(gold, pred, _token_f1) for gold, pred in pairs) / len(pairs)


class Contains(_FieldMetric):
    """1.0 when every compared field's prediction contains its label text."""

    name = "contains"

    def __call__(self, example: Example, prediction: Prediction, trace: Any = None) -> bool:
        return all(
            self._best(gold, pred, lambda g, p: float(g in p)) == 1.0
            for gold, pred in self._pairs(example, prediction)
        )


def _token_f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = gold.split(), pred.split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


exact_match = ExactMatch()
f1 = F1()
contains = Contains()

#: Metrics the command line knows by name.
BUILTIN: dict[str, Callable[..., Any]] = {
    "exact_match": exact_match,
    "f1": f1,
    "contains": contains,
}


class Judge:
    """An LLM-as-judge metric defined by a signature.

    The signature's inputs are filled by name: ``expected_<x>`` / ``gold_<x>`` from the
    example's field ``x``; any other name from the prediction first, then the example
    (or from ``inputs={"name": lambda example, prediction: ...}``). Its first output
    field is the score: ``bool`` (pass/fail) or a number in [0, 1], or in
    ``scale=(low, high)`` and mapped to [0, 1] from it. A verdict outside its scale (or
    no score at all) is a :class:`lmforge.ParseError`, so the example is listed as failed
    instead of silently clamped::

        judge = lf.metrics.Judge(
            "question, answer, expected_answer -> correct: bool",
            lm=lf.LM("openai/gpt-4o-mini"),
        )

    The judge's LM calls are counted in evaluation usage and budgets like any other.
    """

    def __init__(
        self,
        signature: Any,
        *,
        lm: Any = None,
        adapter: Any = None,
        inputs: Mapping[str, Callable[[Example, Prediction], Any]] | None = None,
        scale: tuple[float, float] | None = None,
        name: str = "judge",
    ) -> None:
        from .predict import Predict

        self.predict = Predict(signature, lm=lm, adapter=adapter)
        self.inputs = dict(inputs or {})
        self.name = name
        self.scale = _check_scale(scale)
        outputs = self.predict.signature.output_fields
        if not outputs:
            raise UsageError("a Judge signature needs an output field holding the score")
        self.score_field = outputs[0].name
        unknown = set(self.inputs) - {f.name for f in self.predict.signature.input_fields}
        if unknown:
            raise UsageError(
                f"Judge(inputs=...) names {sorted(unknown)}, which the signature does not have"
            )

    def judge_inputs(self, example: Example, prediction: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.predict.signature.input_fields:
            name = field.name
            if name in self.inputs:
                values[name] = self.inputs[name](example, prediction)  # type: ignore[arg-type]
                continue
            for prefix in ("expected_", "gold_"):
                if name.startswith(prefix) and name[len(prefix) :] in example:
                    values[name] = example[name[len(prefix) :]]
                    break
            else:
                if name in prediction:
                    values[name] = prediction[name]
                elif name in example:
                    values[name] = example[name]
                else:
                    raise UsageError(
                        f"Judge: no value for its input {name!r}: neither the prediction "
                        f"({sorted(prediction)}) nor the example ({sorted(example)}) has "
                        f"it; pass inputs={{...}}"
                    )
        return values

    def _score(self, verdict: Prediction) -> float:
        value = verdict[self.score_field]
        if isinstance(value, enum.Enum):
            value = value.value
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("yes", "true", "pass", "correct"):
                return 1.0
            if lowered in ("no", "false", "fail", "incorrect"):
                return 0.0
            try:
                value = float(lowered)
            except ValueError:
                raise ParseError(
                    f"Judge: the score field {self.score_field!r} gave {value!r}, not a score",
                    raw=str(value),
                    field=self.score_field,
                ) from None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParseError(
                f"Judge: the score field {self.score_field!r} gave {value!r}, not a score",
                raw=str(value),
                field=self.score_field,
            ) from None
        low, high = self.scale if self.scale is not None else (0.0, 1.0)
        if not low <= number <= high:  # NaN fails this too
            hint = (
                "; if the judge answers on another scale, pass Judge(..., scale=(low, high))"
                if self.scale is None
                else ""
            )
            raise ParseError(
                f"Judge: the score field {self.score_field!r} gave {value!r}, outside the "
                f"scale [{_num(low)}, {_num(high)}]{hint}",
                raw=str(value),
                field=self.score_field,
            )
        return (number - low) / (high - low)

    def __call__(self, example: Example, prediction: Prediction, trace: Any = None) -> float:
        return self._score(self.predict(**self.judge_inputs(example, prediction)))

    async def acall(self, example: Example, prediction: Prediction, trace: Any = None) -> float:
        return self._score(await self.predict.acall(**self.judge_inputs(example, prediction)))

    def __repr__(self) -> str:
        return f"Judge({self.predict.signature!r})"


def _check_scale(scale: Any) -> tuple[float, float] | None:
    """``Judge(scale=...)``: ``None`` or two numbers ``(low, high)`` with ``low < high``."""
    if scale is None:
        return None
    usage = "Judge(scale=...) must be two numbers (low, high) with low < high, e.g. (1, 5)"
    if isinstance(scale, str | bytes) or not isinstance(scale, Sequence) or len(scale) != 2:
        raise UsageError(f"{usage}; got {scale!r}")
    low, high = scale
    for bound in (low, high):
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
        ):
            raise UsageError(f"{usage}; got {scale!r}")
    if not low < high:
        raise UsageError(f"{usage}; got {scale!r}")
    return float(low), float(high)


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def metric_name(metric: Any) -> str:
    """A short display name for a metric callable."""
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(metric, "__name__", None) or type(metric).__name__)


@functools.lru_cache(maxsize=256)
def _takes_trace(metric: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(metric).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 3


def _accepts_trace(metric: Callable[..., Any]) -> bool:
    try:
        return _takes_trace(metric)
    except TypeError:  # unhashable callable
        return _takes_trace.__wrapped__(metric)


async def call_metric(
    metric: Any, example: Example, prediction: Prediction, trace: Any = None
) -> Any:
    """Call a metric: its ``acall`` if it has one, else the (sync or async) callable.

    Two-argument metrics ``metric(example, prediction)`` are accepted too.
    """
    acall = getattr(metric, "acall", None)
    if callable(acall):
        return await acall(example, prediction, trace)
    if not callable(metric):
        raise UsageError(
            f"a metric must be callable as metric(example, prediction, trace=None), got {metric!r}"
        )
    result = (
        metric(example, prediction, trace)
        if _accepts_trace(metric)
        else metric(example, prediction)
    )
    if inspect.isawaitable(result):
        result = await result
    return result


def resolve(names: Iterable[str]) -> list[Callable[..., Any]]:
    """Built-in metrics by name (``exact_match``, ``f1``, ``contains``)."""
    found = []
    for name in names:
        if name not in BUILTIN:
            raise UsageError(f"unknown metric {name!r}; built-in metrics are {sorted(BUILTIN)}")
        found.append(BUILTIN[name])
    return found
