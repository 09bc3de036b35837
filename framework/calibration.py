"""Calibration of label scores: undo a prompt's bias toward some labels.

A prompt (its instructions, demos and their order) makes a model favour some labels
whatever the input. Two corrections, each a per-label log-bias added to the label scores
before the argmax (:class:`Calibration`):

* **contextual** (Zhao et al., 2021): score the prompt with content-free inputs (``"N/A"``,
  ``""``, ``"[MASK]"``), average their label distributions into ``p_cf`` and divide it
  out: ``p(label) ∝ p(label | input) / p_cf(label)``, i.e. a bias of ``-log p_cf``;
* **fitted**: a bias vector fitted on a labelled dev split (minimum negative
  log-likelihood of the gold labels by gradient descent, starting from the contextual
  bias), kept only when it scores at least as well on that split.

:func:`calibrate` measures and sets them on every scoring predictor of a program; the
calibration is saved in the artifact with the predictor and applied at inference.
``Calibration.enabled`` (or :func:`set_calibration`) switches it off and on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .errors import UsageError

if TYPE_CHECKING:
    from .example import Example
    from .module import Module
    from .predict import Predict

__all__ = [
    "CONTENT_FREE",
    "Calibration",
    "calibrate",
    "can_calibrate",
    "contextual_bias",
    "fit_bias",
    "set_calibration",
]

#: The content-free inputs of contextual calibration (every input field gets each one).
CONTENT_FREE: tuple[str, ...] = ("N/A", "", "[MASK]")
Method = Literal["auto", "contextual", "fitted"]
_FIT_STEPS = 300
_FIT_RATE = 0.5
_FIT_L2 = 0.01  # pulls the fitted bias toward its start: a small dev split cannot overfit


@dataclasses.dataclass(frozen=True, slots=True)
class Calibration:
    """A per-label log-bias added to a predictor's label scores (``labels`` in the order of
    the output type). ``method`` says how it was measured; ``enabled=False`` keeps it
    stored but unused."""

    labels: tuple[str, ...]
    bias: tuple[float, ...]
    method: Literal["contextual", "fitted"] = "contextual"
    enabled: bool = True

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.bias) or not self.labels:
            raise ValueError("a calibration needs one bias per label")
        if not all(math.isfinite(b) for b in self.bias):
            raise ValueError("calibration biases must be finite numbers")

    def fits(self, labels: Sequence[str]) -> bool:
        """Whether it applies to ``labels`` (it is on, and for that label set)."""
        return self.enabled and tuple(labels) == self.labels

    def apply(self, log_probs: Sequence[float]) -> list[float]:
        """``log_probs`` with the bias added."""
        return [x + b for x, b in zip(log_probs, self.bias, strict=True)]

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "bias": [round(b, 6) for b in self.bias],
            "method": self.method,
            "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_json`; raises ``ValueError`` on a malformed one."""
        if not isinstance(data, Mapping):
            raise ValueError("calibration must be an object")
        method = data.get("method", "contextual")
        if method not in ("contextual", "fitted"):
            raise ValueError(f"unknown calibration method {method!r}")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError("calibration 'enabled' must be true or false")
        return cls(
            labels=tuple(str(x) for x in data["labels"]),
            bias=tuple(float(x) for x in data["bias"]),
            method=method,
            enabled=enabled,
        )


def contextual_bias(distributions: Sequence[Sequence[float]]) -> list[float]:
    """``-log p_cf``: ``p_cf`` the mean of the label ``distributions`` (probabilities)
    measured on content-free inputs, renormalised; floored so that no bias is infinite."""
    if not distributions:
        raise UsageError("contextual calibration needs at least one content-free distribution")
    count = len(distributions)
    mean = [sum(d[i] for d in distributions) / count for i in range(len(distributions[0]))]
    total = sum(mean)
    return [-math.log(max(p / total, 1e-6)) for p in mean]


def fit_bias(
    log_probs: Sequence[Sequence[float]], gold: Sequence[int], start: Sequence[float]
) -> list[float]:
    """The bias minimising the mean negative log-likelihood of the ``gold`` label indices
    under ``softmax(log_probs + bias)``, by gradient descent from ``start`` (with a small
    pull toward ``start``)."""
    from .scoring import normalise

    bias = list(start)
    if not log_probs:
        return bias
    size, count = len(bias), len(log_probs)
    for _ in range(_FIT_STEPS):
        gradient = [_FIT_L2 * (b - s) for b, s in zip(bias, start, strict=True)]
        for row, answer in zip(log_probs, gold, strict=True):
            probs = normalise([x + b for x, b in zip(row, bias, strict=True)])
            for i in range(size):
                gradient[i] += (probs[i] - (1.0 if i == answer else 0.0)) / count
        bias = [b - _FIT_RATE * g for b, g in zip(bias, gradient, strict=True)]
    shift = sum(bias) / size  # only differences matter; keep the numbers small
    return [b - shift for b in bias]


def _accuracy(
    log_probs: Sequence[Sequence[float]], gold: Sequence[int], bias: Sequence[float]
) -> tuple[int, float]:
    """(correct answers, -NLL) of ``bias`` on a scored split: higher is better."""
    from .scoring import normalise

    correct, nll = 0, 0.0
    for row, answer in zip(log_probs, gold, strict=True):
        probs = normalise([x + b for x, b in zip(row, bias, strict=True)])
        correct += max(range(len(probs)), key=probs.__getitem__) == answer
        nll -= math.log(max(probs[answer], 1e-12))
    return correct, -nll


def _content_free_inputs(predictor: Predict, text: str) -> dict[str, Any] | None:
    fields = predictor.signature.input_fields
    if not all(f.annotation is str for f in fields):
        return None  # only text inputs have a content-free value
    return {f.name: text for f in fields}


def _gold_index(values: Sequence[Any], labels: Sequence[str], gold: Any) -> int | None:
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        if gold == value or str(gold) == label:
            return i
    return None


def can_calibrate(predictor: Predict) -> bool:
    """Whether :func:`calibrate` would calibrate ``predictor``: a closed output, text
    inputs and an LM (the predictor's or the configured one) that can score its prompt."""
    from .scoring import label_set

    inputs = _content_free_inputs(predictor, CONTENT_FREE[0])
    if inputs is None:
        return False
    try:
        lm = predictor.resolve_lm()
    except UsageError:
        return False
    if label_set(predictor.resolve_adapter(lm), predictor.signature) is None:
        return False
    probe = predictor.format(inputs, lm=lm)
    return lm.can_score(lm.request(messages=probe.messages, prompt=probe.text))


def calibrate_predictor(
    predictor: Predict,
    dev: Sequence[Example] | None = None,
    *,
    method: Method = "auto",
    content_free: Sequence[str] = CONTENT_FREE,
) -> Calibration | None:
    """Measure and set ``predictor``'s calibration; ``None`` (and nothing set) when the
    predictor has no closed output, its LM cannot score, or no input is text."""
    from .scoring import normalise, score_labels

    if not can_calibrate(predictor):
        return None  # an open output, inputs that are not text, or an LM that generates
    lm = predictor.resolve_lm()
    rows = [
        (text, inputs)
        for text in content_free
        if (inputs := _content_free_inputs(predictor, text)) is not None
    ]
    distributions = []
    for _, inputs in rows:
        labels, scores = score_labels(predictor, inputs, lm=lm)
        distributions.append(normalise(scores))
    contextual = contextual_bias(distributions)
    chosen = Calibration(labels.labels, tuple(contextual), "contextual")
    if method in ("auto", "fitted") and dev:
        names = {f.name for f in predictor.signature.input_fields}
        scored: list[list[float]] = []
        gold: list[int] = []
        for example in dev:
            answer = example.get(labels.field)
            index = _gold_index(labels.values, labels.labels, answer)
            if index is None or not names <= set(example):
                continue
            _, scores = score_labels(predictor, {n: example[n] for n in names}, lm=lm)
            scored.append(scores)
            gold.append(index)
        if scored:
            fitted = fit_bias(scored, gold, contextual)
            if method == "fitted" or _accuracy(scored, gold, fitted) >= _accuracy(
                scored, gold, contextual
            ):
                chosen = Calibration(labels.labels, tuple(fitted), "fitted")
        elif method == "fitted":
            raise UsageError(
                f"fitted calibration of {predictor!r} needs dev examples with its inputs "
                f"{sorted(names)} and a labelled '{labels.field}'"
            )
    elif method == "fitted":
        raise UsageError("method='fitted' needs a dev split: calibrate(program, dev=[...])")
    predictor.calibration = chosen
    return chosen


def calibrate(
    program: Module,
    dev: Sequence[Example] | None = None,
    *,
    method: Method = "auto",
    content_free: Sequence[str] = CONTENT_FREE,
) -> Module:
    """Calibrate every label-scoring predictor of ``program`` in place; returns it.

    ``method="contextual"`` uses content-free inputs only; ``"fitted"`` fits a bias on
    ``dev`` (examples holding the predictor's inputs and its labelled output);
    ``"auto"`` (default) fits on ``dev`` when given and keeps the fitted bias only when it
    does at least as well there as the contextual one. Predictors that cannot score (no
    closed output, an LM that cannot score, inputs that are not text) are left alone.
    Their LM is the one configured (``lf.use(lm=...)`` or the predictor's).
    """
    if method not in ("auto", "contextual", "fitted"):
        raise UsageError(f"method must be 'auto', 'contextual' or 'fitted', not {method!r}")
    for predictor in program.predictors():
        calibrate_predictor(predictor, dev, method=method, content_free=content_free)
    return program


def set_calibration(program: Module, enabled: bool) -> Module:
    """Switch the stored calibration of every predictor of ``program`` on or off."""
    for predictor in program.predictors():
        if predictor.calibration is not None:
            predictor.calibration = dataclasses.replace(predictor.calibration, enabled=enabled)
    return program
