"""The lights section of a report: per-light tables and a reliability diagram as inline SVG
(no JavaScript, nothing loaded), from a ``lights`` entry as ``lmforge compile`` stores it::

    {"green": 0.8, "red": 0.4, "target": 0.9, "floor": 0.5, "n": 50, "split": "dev",
     "dev": {"green": {"n", "coverage", "precision"}, "yellow": ..., "red": ...},
     "test": {...},                                       # any other scored split
     "reliability": {"dev": [{"low", "high", "n", "confidence", "accuracy"}, ...]}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = ["lights_view", "reliability_svg"]

_SPLITS = ("dev", "unseen train", "test", "eval")
_SIZE = 260  # plot area in pixels
_PAD = 36


def lights_view(entry: Any) -> dict[str, Any] | None:
    """What the template shows for a lights entry (``None`` when there is none)."""
    if not isinstance(entry, Mapping):
        return None
    curves = entry.get("reliability") if isinstance(entry.get("reliability"), Mapping) else {}
    splits = [s for s in _SPLITS if isinstance(entry.get(s), Mapping)]
    return {
        "green": entry.get("green"),
        "red": entry.get("red"),
        "target": entry.get("target"),
        "tables": {split: dict(entry[split]) for split in splits},
        "diagrams": {
            split: reliability_svg(bins, split)
            for split, bins in (curves or {}).items()
            if isinstance(bins, Sequence) and bins
        },
    }


def reliability_svg(bins: Sequence[Mapping[str, Any]], title: str) -> Markup:
    """Binned confidence (x) against accuracy (y): a bar per bin, the diagonal a perfectly
    calibrated model would follow, and each bin's answer count."""
    size, pad = _SIZE, _PAD

    def x(value: float) -> float:
        return pad + value * size

    def y(value: float) -> float:
        return pad + (1 - value) * size

    parts = [
        f'<svg class="reliability" width="{size + 2 * pad}" height="{size + 2 * pad}" '
        f'viewBox="0 0 {size + 2 * pad} {size + 2 * pad}" role="img" '
        f'aria-label="reliability diagram ({escape(title)})">',
        f'<text x="{pad}" y="{pad - 14}" font-size="12">{escape(title)}: accuracy per '
        "confidence bin</text>",
        f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#d5dae3"/>',
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#9a6700" '
        'stroke-dasharray="4 3"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{x(tick)}" y="{y(0) + 14}" font-size="10" text-anchor="middle">'
            f"{tick:g}</text>"
            f'<text x="{pad - 6}" y="{y(tick) + 3}" font-size="10" text-anchor="end">'
            f"{tick:g}</text>"
        )
    for item in bins:
        low, high = float(item["low"]), float(item["high"])
        accuracy = float(item["accuracy"])
        width = (high - low) * size
        parts.append(
            f'<rect class="bin" x="{x(low) + 1:.1f}" y="{y(accuracy):.1f}" '
            f'width="{max(width - 2, 1):.1f}" height="{accuracy * size:.1f}" fill="#1f6feb" '
            f'fill-opacity="0.55"><title>confidence {low:g}-{high:g}: accuracy '
            f"{accuracy:.2f} over {int(item['n'])} answer(s)</title></rect>"
            f'<text x="{x(low) + width / 2:.1f}" y="{y(accuracy) - 3:.1f}" font-size="9" '
            f'text-anchor="middle">{int(item["n"])}</text>'
        )
    parts.append(
        f'<text x="{x(0.5)}" y="{y(0) + 28}" font-size="11" text-anchor="middle">'
        "confidence</text></svg>"
    )
    return Markup("".join(parts))
