"""Lights on the command line. ``lmforge compile``: fit green/red confidence thresholds on
the dev split and the training rows the compiled program never shows, after the optimizer,
store them in the artifact, and report how they hold on the test split (which calibration
never saw). ``lmforge eval``: precision and coverage per light on the evaluated data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lmforge as lf
from lmforge.lights import (
    META_KEY,
    Thresholds,
    colour_summary,
    confidence_pairs,
    fit_pooled,
    reliability,
    thresholds_of,
)

from .held_out import HeldOut

__all__ = ["calibrate", "describe", "evaluation_lights", "held_out_lights", "print_lights"]

#: Dev examples scored to see whether the program's answers carry a confidence at all.
_PROBE = 3


def calibrate(
    evaluations: HeldOut,
    compiled: lf.Module,
    devset: Sequence[lf.Example],
    metric: Callable[..., Any],
    *,
    unseen: Sequence[lf.Example] = (),
    target: float,
    concurrency: int | None,
    progress: bool,
) -> tuple[dict[str, Any] | None, int | None]:
    """Score ``compiled`` on the dev split (checkpointed; mostly cache hits after the
    optimizer's own dev evaluation) and on the ``unseen`` training rows (those it never
    shows, see :func:`lmforge.lights.unseen_rows`) and, when its answers carry a
    confidence, fit the thresholds on both and store them. Returns (the stored
    ``meta["lights"]`` entry or ``None``, LM calls).

    A few examples are scored first: a program whose answers carry no confidence costs
    those, not a second pass over the whole split."""
    probe = evaluations.score(
        compiled, devset[:_PROBE], metric, label="lights", concurrency=concurrency, progress=False
    )
    calls = probe["lm_calls"] or 0
    if not probe.get("pairs"):
        return None, calls
    scored: dict[str, list[Any]] = {}
    for split, rows in (("dev", devset), ("unseen train", unseen)):
        if not rows:
            continue
        result = evaluations.score(
            compiled,
            rows,
            metric,
            label=f"lights ({split})",
            concurrency=concurrency,
            progress=progress,
        )
        calls += result["lm_calls"] or 0
        if result.get("pairs"):
            scored[split] = result["pairs"]
    _, entry = fit_pooled(compiled, scored, target=target)
    entry["reliability"] = {
        split: reliability(split_pairs) for split, split_pairs in scored.items()
    }
    return entry, calls


def held_out_lights(entry: dict[str, Any], split: str, pairs: Sequence[Any] | None) -> None:
    """Add ``split``'s per-light figures and reliability bins to a lights ``entry``."""
    if not pairs:
        return
    thresholds = Thresholds.from_dict(entry)
    entry[split] = colour_summary(pairs, thresholds)
    entry["reliability"][split] = reliability(pairs)


def describe(entry: dict[str, Any]) -> str:
    """One line: the thresholds and, per split, green's precision and coverage."""
    parts = [
        f"green >= {entry['green']:.2f}" if entry["green"] is not None else "no green",
        f"red < {entry['red']:.2f}" if entry["red"] is not None else "no red",
    ]
    for split in ("dev", "unseen train", "test"):
        green = (entry.get(split) or {}).get("green")
        if green and green["precision"] is not None:
            parts.append(
                f"{split} green precision {100 * green['precision']:.1f}% at "
                f"{100 * green['coverage']:.1f}% coverage"
            )
    return f"lights (target {100 * entry['target']:.0f}% precision): " + ", ".join(parts)


def evaluation_lights(program: lf.Module, rows: Sequence[Any]) -> dict[str, Any] | None:
    """The lights entry of an ``lmforge eval`` run: the artifact's thresholds (and the
    figures of its calibration), this data's per-light figures under them (``"eval"``) and
    its reliability bins. ``None`` when no answer carried a confidence."""
    pairs = confidence_pairs(rows)
    if all(confidence is None for confidence, _ in pairs):
        return None
    thresholds = thresholds_of(program)
    stored = dict((getattr(program, "artifact_meta", None) or {}).get(META_KEY) or {})
    entry: dict[str, Any] = {**stored, **(thresholds.to_dict() if thresholds else {})}
    entry.setdefault("green", None)
    entry.setdefault("red", None)
    entry["eval"] = colour_summary(pairs, thresholds) if thresholds is not None else None
    entry["reliability"] = {**(stored.get("reliability") or {}), "eval": reliability(pairs)}
    return entry


def print_lights(entry: dict[str, Any], console: Any) -> None:
    """The per-light table of an evaluation (or a note that the artifact has no thresholds)."""
    from rich.table import Table

    summary = entry.get("eval")
    if summary is None:
        console.print(
            "lights: answers carry a confidence but the artifact has no thresholds; "
            "recompile with --dev to calibrate them",
            markup=False,
        )
        return
    table = Table(title=describe(entry))
    for column in ("light", "answers", "coverage", "precision"):
        table.add_column(column)
    for light, row in summary.items():
        precision = row["precision"]
        table.add_row(
            light,
            str(row["n"]),
            f"{100 * row['coverage']:.1f}%",
            f"{100 * precision:.1f}%" if precision is not None else "-",
        )
    console.print(table)
