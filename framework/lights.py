"""Traffic lights on answers: green / yellow / red from a prediction's ``confidence``.

Thresholds are fitted on (confidence, score) pairs from a labeled split the program was
not tuned to answer (the dev split at compile time)::

    thresholds = lf.lights.fit_thresholds(pairs, target=0.9)
    thresholds.light(0.95)  # "green", "yellow", "red" or None

- ``green``: the lowest confidence from which the answers' precision (mean metric score)
  reaches ``target`` (default 0.9); no green at all when no threshold reaches it.
- ``red``: the highest confidence (at most ``green``) below which answers are mostly
  wrong: the precision of all answers under it, and of the ``min_support`` answers just
  under it, is below ``floor`` (default 0.5); no red when no such threshold exists. (All
  answers under it alone would stretch red up to green for a well-calibrated model.)
- everything else is yellow; a prediction without a confidence has no light.

Each side needs at least ``min_support`` answers to count, so one lucky answer never makes a
threshold. A small dev split rarely has that many answers at high confidence, so when a
training set is given, the training rows the program never shows (:func:`unseen_rows`:
those that are not one of its demos) are scored with the dev split and pooled with it.

The thresholds live in the artifact's ``meta["lights"]``; a program loaded with them sets
``prediction.light`` on every call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ArtifactError, UsageError
from .example import Prediction

if TYPE_CHECKING:
    from .evaluation_result import EvaluationRow
    from .module import Module

__all__ = [
    "LIGHTS",
    "META_KEY",
    "Thresholds",
    "calibrate",
    "colour_summary",
    "confidence_pairs",
    "fit_pooled",
    "fit_thresholds",
    "mark",
    "reliability",
    "store",
    "thresholds_of",
    "unseen_rows",
]

LIGHTS = ("green", "yellow", "red")
META_KEY = "lights"

#: One scored answer: its confidence (``None`` when unknown) and its metric score in [0, 1].
Pair = tuple[float | None, float]


@dataclasses.dataclass(frozen=True, slots=True)
class Thresholds:
    """Fitted light thresholds (``None``: that colour is never given)."""

    green: float | None
    red: float | None
    target: float = 0.9
    floor: float = 0.5
    n: int = 0
    split: str = "dev"

    def light(self, confidence: float | None) -> str | None:
        """The light of an answer with ``confidence`` (``None`` without a confidence)."""
        if confidence is None:
            return None
        if self.green is not None and confidence >= self.green:
            return "green"
        if self.red is not None and confidence < self.red:
            return "red"
        return "yellow"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Thresholds:
        """Thresholds from an artifact's ``meta["lights"]``; ArtifactError when malformed."""
        if not isinstance(data, Mapping):
            raise ArtifactError("meta['lights'] must be an object; recompile the program")
        values: dict[str, Any] = {}
        for key in ("green", "red", "target", "floor"):
            value = data.get(key)
            optional = key in ("green", "red")
            if value is None and optional:
                values[key] = None
                continue
            if not _unit(value):
                raise ArtifactError(
                    f"meta['lights'][{key!r}] must be a number in [0, 1], got {value!r}; "
                    "recompile the program"
                )
            values[key] = float(value)  # type: ignore[arg-type]
        green, red = values["green"], values["red"]
        if green is not None and red is not None and red > green:
            raise ArtifactError(
                "meta['lights']: the red threshold is above the green one; recompile"
            )
        n = data.get("n", 0)
        return cls(**values, n=n if isinstance(n, int) else 0, split=str(data.get("split", "dev")))


def fit_thresholds(
    pairs: Iterable[Pair],
    *,
    target: float = 0.9,
    floor: float = 0.5,
    min_support: int = 5,
    split: str = "dev",
) -> Thresholds:
    """Fit green and red thresholds on ``(confidence, score)`` pairs (see the module
    docstring). Pairs without a confidence are ignored."""
    for name, value in (("target", target), ("floor", floor)):
        if not _unit(value):
            raise UsageError(
                f"fit_thresholds({name}=...) must be a number in [0, 1], got {value!r}"
            )
    if floor > target:
        raise UsageError(f"fit_thresholds: floor {floor} is above target {target}; swap them")
    if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
        raise UsageError(f"fit_thresholds(min_support=...) must be at least 1, got {min_support!r}")
    rated = sorted(((c, s) for c, s in _checked(pairs) if c is not None), key=lambda p: p[0])
    levels = sorted({c for c, _ in rated})
    green: float | None = None
    for level in levels:  # lowest first: the first that reaches the target covers the most
        above = [s for c, s in rated if c >= level]
        if len(above) >= min_support and _mean(above) >= target:
            green = level
            break
    red: float | None = None
    for level in reversed(levels):  # highest first: the first under the floor covers the most
        if green is not None and level > green:
            continue
        below = [s for c, s in rated if c < level]
        if (
            len(below) >= min_support
            and _mean(below) < floor
            and _mean(_nearest(rated, level, min_support)) < floor
        ):
            red = level
            break
    return Thresholds(green, red, float(target), float(floor), len(rated), split)


def _nearest(rated: Sequence[tuple[float, float]], level: float, count: int) -> list[float]:
    """The scores of the ``count`` answers just under ``level`` (ties at the last one's
    confidence included): the answers a red threshold at ``level`` is least sure about."""
    below = [pair for pair in rated if pair[0] < level][::-1]  # ``rated`` is sorted ascending
    window = below[:count]
    edge = window[-1][0]
    window += [pair for pair in below[count:] if pair[0] == edge]
    return [score for _, score in window]


def colour_summary(pairs: Iterable[Pair], thresholds: Thresholds) -> dict[str, dict[str, Any]]:
    """Per light: ``n``, ``coverage`` (share of all answers) and ``precision`` (mean score,
    ``None`` when it has no answer); ``"none"`` counts answers without a confidence."""
    groups: dict[str, list[float]] = {name: [] for name in (*LIGHTS, "none")}
    items = _checked(pairs)
    for confidence, score in items:
        groups[thresholds.light(confidence) or "none"].append(score)
    total = len(items)
    summary = {
        name: {
            "n": len(scores),
            "coverage": len(scores) / total if total else 0.0,
            "precision": _mean(scores) if scores else None,
        }
        for name, scores in groups.items()
    }
    if not groups["none"]:
        del summary["none"]
    return summary


def reliability(pairs: Iterable[Pair], bins: int = 10) -> list[dict[str, Any]]:
    """A reliability diagram's data: equal-width confidence bins with their answer count,
    mean confidence and accuracy (mean score); empty bins are left out."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise UsageError(f"reliability(bins=...) must be at least 1, got {bins!r}")
    grouped: dict[int, list[tuple[float, float]]] = {}
    for confidence, score in _checked(pairs):
        if confidence is not None:
            grouped.setdefault(min(int(confidence * bins), bins - 1), []).append(
                (confidence, score)
            )
    return [
        {
            "low": index / bins,
            "high": (index + 1) / bins,
            "n": len(members),
            "confidence": _mean([c for c, _ in members]),
            "accuracy": _mean([s for _, s in members]),
        }
        for index, members in sorted(grouped.items())
    ]


def confidence_pairs(rows: Iterable[EvaluationRow]) -> list[Pair]:
    """``(confidence, score)`` of evaluation rows (a failed example: no confidence)."""
    pairs: list[Pair] = []
    for row in rows:
        confidence = row.prediction.confidence if row.prediction is not None else None
        pairs.append((confidence if _unit(confidence) else None, row.score))
    return pairs


def thresholds_of(program: Any) -> Thresholds | None:
    """The thresholds stored in ``program``'s artifact meta, or ``None``."""
    meta = getattr(program, "artifact_meta", None)
    data = meta.get(META_KEY) if isinstance(meta, Mapping) else None
    return Thresholds.from_dict(data) if data else None


def mark(program: Any, prediction: Any) -> Any:
    """Set ``prediction.light`` from its confidence and ``program``'s thresholds."""
    if isinstance(prediction, Prediction) and _unit(prediction.confidence):
        thresholds = thresholds_of(program)
        if thresholds is not None:
            prediction.light = thresholds.light(prediction.confidence)
    return prediction


def calibrate(
    program: Module,
    devset: Sequence[Any],
    metric: Any,
    *,
    trainset: Sequence[Any] | None = None,
    target: float = 0.9,
    floor: float = 0.5,
    min_support: int = 5,
    concurrency: int | None = None,
    progress: bool = False,
) -> Thresholds | None:
    """Evaluate ``program`` on ``devset`` (one program call per example), fit thresholds
    and store them in ``program.artifact_meta["lights"]`` (saved with the program).
    Returns ``None`` and stores nothing when no prediction carried a confidence.

    ``trainset``: the training set the program was compiled on; its rows the program never
    shows (:func:`unseen_rows`) are scored too and pooled with the dev split (``split``
    ``"dev + unseen train"``). Leave it out for a program whose weights were tuned on it."""
    from .evaluation import evaluate

    splits = {"dev": list(devset), "unseen train": unseen_rows(program, trainset or ())}
    scored: dict[str, list[Pair]] = {}
    for split, rows in splits.items():
        if rows:
            result = evaluate(
                program,
                rows,
                metric,
                concurrency=concurrency,
                progress=progress,
                description=f"lights ({split})",
            )
            scored[split] = confidence_pairs(result.rows)
    if all(confidence is None for pairs in scored.values() for confidence, _ in pairs):
        return None
    thresholds, _ = fit_pooled(program, scored, target=target, floor=floor, min_support=min_support)
    return thresholds


def fit_pooled(
    program: Any,
    scored: Mapping[str, Sequence[Pair]],
    *,
    target: float = 0.9,
    floor: float = 0.5,
    min_support: int = 5,
) -> tuple[Thresholds, dict[str, Any]]:
    """Fit thresholds on the pairs of every split of ``scored`` together (``split`` names
    them all, ``"dev + unseen train"``) and store them with per-split figures; returns the
    thresholds and the stored entry."""
    pairs = [pair for split_pairs in scored.values() for pair in split_pairs]
    thresholds = fit_thresholds(
        pairs, target=target, floor=floor, min_support=min_support, split=" + ".join(scored)
    )
    return thresholds, store(program, thresholds, pairs, by_split=scored)


def unseen_rows(program: Module, rows: Iterable[Any]) -> list[Any]:
    """The ``rows`` (``lf.Example``) that ``program`` never shows: those whose inputs are
    not the inputs of one of its demos. None when a predictor picks demos per input (from
    a pool of training rows, a row would be shown its own label). Training rows a program
    was compiled on but never shows are as good as held out for calibrating its lights."""
    predictors = program.predictors()
    if any(getattr(p, "demo_selector", None) is not None for p in predictors):
        return []
    shown: list[dict[str, Any]] = [dict(demo) for p in predictors for demo in p.demos]
    unseen = []
    for row in rows:
        keys = row.input_keys
        if not keys:
            continue  # inputs unmarked: cannot tell whether it is shown
        inputs = {key: row[key] for key in keys}
        if not any(
            all(key in demo and demo[key] == value for key, value in inputs.items())
            for demo in shown
        ):
            unseen.append(row)
    return unseen


def store(
    program: Any,
    thresholds: Thresholds,
    pairs: Sequence[Pair],
    *,
    by_split: Mapping[str, Sequence[Pair]] | None = None,
) -> dict[str, Any]:
    """Put ``thresholds`` (with the per-light figures of the calibration ``pairs``, or of
    each split of ``by_split`` when they were pooled from several) into
    ``program.artifact_meta``; returns what was stored."""
    entry: dict[str, Any] = thresholds.to_dict()
    for split, split_pairs in (by_split or {thresholds.split: pairs}).items():
        entry[split] = colour_summary(split_pairs, thresholds)
    meta = dict(getattr(program, "artifact_meta", None) or {})
    meta[META_KEY] = entry
    program.artifact_meta = meta
    return entry


def _checked(pairs: Iterable[Pair]) -> list[Pair]:
    items = []
    for item in pairs:
        try:
            confidence, score = item
        except (TypeError, ValueError):
            raise UsageError(f"expected (confidence, score) pairs, got {item!r}") from None
        if confidence is not None and not _unit(confidence):
            raise UsageError(f"a confidence must be a number in [0, 1] or None, got {confidence!r}")
        if not _unit(score):
            raise UsageError(f"a score must be a number in [0, 1], got {score!r}")
        items.append((None if confidence is None else float(confidence), float(score)))
    return items


def _unit(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
