"""Label scoring: answer a closed output by scoring every label instead of generating.

When a ``Predict``'s signature has one output field and its type is a ``Literal``, an
``Enum`` or ``bool``, and the LM's backend can score (``LM.can_score``: the embedded local
model, vLLM and OpenAI-compatible text-completion servers), the predictor renders its
prompt as usual and asks the LM for the log-probability of each label's full reply (the
text the adapter would parse back as that label). The answer is the most probable label
after the predictor's calibration (:mod:`lmforge.calibration`), and
``prediction.confidence`` is its probability normalised over the label set
(``prediction.label_probs`` holds all of them).

``Predict(..., decode=...)`` decides: ``"auto"`` (the default) scores when it can and
generates otherwise (several outputs, open types, sampling with ``temperature > 0`` or
``n > 1``, tools, a backend that cannot score, or a server that refused a scoring
request); ``"score"`` always scores and refuses a call it cannot score; ``"generate"``
never scores. :func:`set_decode` sets it on every
predictor of a program.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .constraints import unwrap_annotated
from .errors import LMError, ParseError, UsageError
from .example import Prediction
from .lm.score_call import score_core, scoring_request
from .lm.types import LMRequest, LMResponse

if TYPE_CHECKING:
    from .adapters.base import Adapter
    from .calibration import Calibration
    from .lm.lm import LM
    from .module import Module
    from .predict import Predict
    from .signature import Signature

__all__ = [
    "DECODES",
    "Decode",
    "LabelSet",
    "check_decode",
    "label_set",
    "labelled_prediction",
    "normalise",
    "plan",
    "score_labels",
    "scored_call",
    "set_decode",
]

Decode = Literal["auto", "score", "generate"]
DECODES: tuple[Decode, ...] = ("auto", "score", "generate")


@dataclasses.dataclass(frozen=True, slots=True)
class LabelSet:
    """The closed answers of a signature's one output field, as an adapter writes them."""

    field: str
    #: the labels as the model is shown them (``Literal`` values, enum values or names)
    labels: tuple[str, ...]
    #: the typed output value of each label
    values: tuple[Any, ...]
    #: the reply text the adapter parses back as each label (what is scored)
    continuations: tuple[str, ...]


def check_decode(value: Any, where: str = "decode") -> Decode:
    """``value`` if it is a decode mode, else a ``UsageError`` saying which ones exist."""
    if value not in DECODES:
        raise UsageError(f"{where} must be 'auto', 'score' or 'generate', not {value!r}")
    return typing.cast(Decode, value)


def set_decode(program: Module, decode: Decode) -> Module:
    """Set ``decode`` on every predictor of ``program`` (returns ``program``)."""
    mode = check_decode(decode)
    for predictor in program.predictors():
        predictor.decode = mode
    return program


def label_set(adapter: Adapter, signature: Signature) -> LabelSet | None:
    """The label set of ``signature`` under ``adapter``, or ``None`` when it has none
    (several outputs, an open type, an adapter that cannot write replies)."""
    return typing.cast(
        "LabelSet | None",
        adapter.cached(("label_set", signature), lambda: _build_label_set(adapter, signature)),
    )


def _build_label_set(adapter: Adapter, signature: Signature) -> LabelSet | None:
    from .fieldtypes import choice_labels

    if len(signature.output_fields) != 1:
        return None
    field = signature.output_fields[0]
    base = unwrap_annotated(field.annotation)
    values: tuple[Any, ...]
    if base is bool:
        values = (True, False)
    elif typing.get_origin(base) is Literal:
        values = typing.get_args(base)
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        values = tuple(base)
    else:
        return None
    labels = choice_labels(base) or tuple("true" if v else "false" for v in values)
    try:
        continuations = tuple(adapter.format_reply(signature, {field.name: v}) for v in values)
        # Each reply must read back as its own label, or scoring would answer wrongly.
        if any(
            adapter.parse(signature, text)[field.name] != value
            for text, value in zip(continuations, values, strict=True)
        ):
            return None
    except (UsageError, ParseError):
        return None
    if len(set(continuations)) != len(continuations):
        return None
    return LabelSet(field.name, tuple(labels), values, continuations)


def plan(
    predictor: Predict, lm: LM, labels: LabelSet | None, request: LMRequest
) -> LabelSet | None:
    """The label set to score for this call, or ``None`` to generate (per ``decode``);
    ``labels`` is the predictor's label set under the call's adapter (:func:`label_set`)."""
    decode = predictor.decode
    if decode == "generate":
        return None
    if decode == "auto":
        params = request.params
        sampled = float(params.get("temperature") or 0) > 0 or int(params.get("n") or 1) > 1
        if labels is None or sampled or request.tools or not lm.can_score(request):
            return None
        return labels
    if labels is None:
        raise UsageError(
            f"decode='score' needs one Literal, Enum or bool output field; {predictor.signature!r} "
            "has none: use decode='auto' or 'generate'"
        )
    if not lm.can_score(request):
        raise UsageError(
            f"decode='score': {lm.model} cannot score this request; use decode='auto' to "
            "generate when scoring is not possible"
        )
    return labels


def normalise(log_probs: Sequence[float]) -> list[float]:
    """Probabilities proportional to ``exp(log_probs)``, summing to 1."""
    top = max(log_probs)
    if top == -math.inf:
        return [1.0 / len(log_probs)] * len(log_probs)
    weights = [math.exp(x - top) for x in log_probs]
    total = sum(weights)
    return [w / total for w in weights]


def labelled_prediction(
    labels: LabelSet, log_probs: Sequence[float], calibration: Calibration | None
) -> tuple[Prediction, int]:
    """The prediction for label scores ``log_probs`` (calibrated when ``calibration`` is on
    and fits this label set), and the chosen label's index: the argmax label, its
    probability as the confidence."""
    if calibration is not None and calibration.fits(labels.labels):
        log_probs = calibration.apply(log_probs)
    probs = normalise(log_probs)
    best = max(range(len(probs)), key=probs.__getitem__)
    prediction = Prediction(
        {labels.field: labels.values[best]},
        _confidence=probs[best],
        _label_probs=dict(zip(labels.labels, probs, strict=True)),
    )
    return prediction, best


async def scored_call(
    predictor: Predict,
    labels: LabelSet,
    lm: LM,
    request: LMRequest,
    inputs: dict[str, Any],
    started: float,
    *,
    blocking: bool,
) -> Prediction | None:
    """A ``Predict`` call answered by scoring ``labels`` (recorded like a generated one);
    ``None`` (with ``decode="auto"``) when the backend refused to score and now says it
    cannot: the caller generates instead."""
    keyed = scoring_request(request, labels.continuations)
    try:
        scores = await score_core(lm, request, labels.continuations, blocking=blocking)
        prediction, best = labelled_prediction(labels, scores, predictor.calibration)
    except Exception as exc:
        if isinstance(exc, LMError) and predictor.decode == "auto" and not lm.can_score(request):
            return None
        predictor._record(inputs, None, keyed, None, exc, started)
        raise
    response = LMResponse(texts=(labels.continuations[best],), finish_reason="score")
    predictor._record(inputs, prediction, keyed, response, None, started)
    return prediction


def score_labels(
    predictor: Predict, inputs: Mapping[str, Any], *, lm: LM | None = None
) -> tuple[LabelSet, list[float]]:
    """The label set of ``predictor`` and the raw (uncalibrated) log-probability of each
    label for ``inputs``; a ``UsageError`` when the predictor's call cannot be scored."""
    lm = lm or predictor.resolve_lm()
    adapter = predictor.resolve_adapter(lm)
    labels = label_set(adapter, predictor.signature)
    if labels is None:
        raise UsageError(
            f"{predictor.signature!r} has no closed output to score (one Literal, Enum or bool "
            "output field is needed)"
        )
    prompt = predictor.format(inputs, lm=lm)
    request = lm.request(messages=prompt.messages, prompt=prompt.text, **predictor.config)
    if not lm.can_score(request):
        raise UsageError(f"{lm.model} cannot score; calibration needs a model that can")
    return labels, lm.score(request, labels.continuations)
