"""Drift watch: reference statistics of a program's dev set, compared with live traffic.

Statistics are the character length of each input and output field, the label
distribution of each categorical output, and latency. The reference keeps, per numeric
statistic, decile bin edges and the share of reference values in each bin; per
categorical one, the share of each label. A live window of recent calls is binned the
same way and compared with the population stability index (PSI):
``sum((live - ref) * ln(live / ref))``. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate
shift, > 0.25 significant shift.
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lmforge import Signature
from lmforge.adapters.coerce import render_value
from lmforge.errors import UsageError

from .program import categorical_outputs

__all__ = ["REFERENCE_VERSION", "DriftMonitor", "reference_stats"]

REFERENCE_VERSION = 1
MIN_WINDOW = 30
_EPS = 1e-4


def _length(value: Any) -> float:
    return float(len(render_value(value)))


def _edges(values: Sequence[float], bins: int = 10) -> list[float]:
    ordered = sorted(values)
    edges: list[float] = []
    for i in range(1, bins):
        edge = ordered[min(len(ordered) - 1, (i * len(ordered)) // bins)]
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def _numeric(values: Sequence[float]) -> dict[str, Any]:
    edges = _edges(values)
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[bisect.bisect_left(edges, value)] += 1
    total = len(values)
    return {
        "kind": "numeric",
        "edges": edges,
        "shares": [c / total for c in counts],
        "n": total,
        "mean": sum(values) / total,
    }


def _categorical(labels: Sequence[str], allowed: Sequence[str]) -> dict[str, Any]:
    counter = collections.Counter(labels)
    total = len(labels)
    return {
        "kind": "categorical",
        "shares": {label: counter.get(label, 0) / total for label in allowed},
        "n": total,
    }


def reference_stats(
    signature: Signature,
    records: Iterable[Mapping[str, Any]],
    *,
    latencies: Iterable[float] | None = None,
) -> dict[str, Any]:
    """Reference statistics from dev-set records (inputs, and outputs when present).

    ``latencies`` are seconds per call (e.g. from the compile run's traces).
    """
    rows = list(records)
    if not rows:
        raise UsageError(
            "reference data is empty; pass at least one record with the program's inputs"
        )
    stats: dict[str, Any] = {}
    for field in signature.input_fields:
        values = [_length(r[field.name]) for r in rows if field.name in r]
        if values:
            stats[f"input_length.{field.name}"] = _numeric(values)
    categorical = categorical_outputs(signature)
    for field in signature.output_fields:
        present = [r[field.name] for r in rows if field.name in r]
        if not present:
            continue
        if field.name in categorical:
            stats[f"label.{field.name}"] = _categorical(
                [render_value(v) for v in present], categorical[field.name]
            )
        else:
            stats[f"output_length.{field.name}"] = _numeric([_length(v) for v in present])
    lat = [float(x) for x in latencies or () if x is not None]
    if lat:
        stats["latency_seconds"] = _numeric(lat)
    if not stats:
        raise UsageError("reference data has none of the program's fields; check the JSONL keys")
    return {"version": REFERENCE_VERSION, "n": len(rows), "statistics": stats}


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins."""
    total = 0.0
    for ref, cur in zip(reference, live, strict=True):
        ref, cur = max(ref, _EPS), max(cur, _EPS)
        total += (cur - ref) * math.log(cur / ref)
    return total


def _level(score: float) -> str:
    return "stable" if score < 0.1 else "moderate" if score < 0.25 else "significant"


class DriftMonitor:
    """A rolling window of recent calls, scored against reference statistics."""

    def __init__(self, reference: Mapping[str, Any] | None, window: int = 500) -> None:
        if reference is not None and reference.get("version") != REFERENCE_VERSION:
            raise UsageError(
                f"reference statistics have version {reference.get('version')!r}; expected "
                f"{REFERENCE_VERSION}. Re-export the bundle with this lmforge."
            )
        self.reference = dict(reference["statistics"]) if reference else {}
        self._windows: dict[str, collections.deque[Any]] = {
            name: collections.deque(maxlen=window) for name in self.reference
        }
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.reference)

    def observe(
        self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None, latency: float | None
    ) -> None:
        """Add one call to the window (outputs/latency may be missing for failed calls)."""
        if not self.reference:
            return
        with self._lock:
            for name, window in self._windows.items():
                kind, _, field = name.partition(".")
                if kind == "input_length" and field in inputs:
                    window.append(_length(inputs[field]))
                elif kind == "output_length" and outputs is not None and field in outputs:
                    window.append(_length(outputs[field]))
                elif kind == "label" and outputs is not None and field in outputs:
                    window.append(render_value(outputs[field]))
                elif name == "latency_seconds" and latency is not None:
                    window.append(latency)

    def report(self) -> dict[str, dict[str, Any]]:
        """Per statistic: PSI score (None until the window has enough calls), level, sizes."""
        with self._lock:
            windows = {name: list(w) for name, w in self._windows.items()}
        result: dict[str, dict[str, Any]] = {}
        for name, ref in self.reference.items():
            values = windows[name]
            entry: dict[str, Any] = {
                "reference_n": ref["n"],
                "window_n": len(values),
                "score": None,
                "level": "insufficient_data",
            }
            if len(values) >= MIN_WINDOW:
                score = psi(*self._distributions(ref, values))
                entry.update(score=round(score, 4), level=_level(score))
                if ref["kind"] == "numeric":
                    entry.update(
                        reference_mean=round(ref["mean"], 4),
                        window_mean=round(sum(values) / len(values), 4),
                    )
            result[name] = entry
        return result

    @staticmethod
    def _distributions(
        ref: Mapping[str, Any], values: Sequence[Any]
    ) -> tuple[list[float], list[float]]:
        total = len(values)
        if ref["kind"] == "numeric":
            edges = ref["edges"]
            counts = [0] * (len(edges) + 1)
            for value in values:
                counts[bisect.bisect_left(edges, value)] += 1
            return list(ref["shares"]), [c / total for c in counts]
        labels = list(ref["shares"])
        counter = collections.Counter(values)
        live = [counter.get(label, 0) / total for label in labels]
        other = 1.0 - sum(live)  # labels outside the allowed set
        return [*(ref["shares"][label] for label in labels), 0.0], [*live, other]
