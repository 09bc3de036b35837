"""USD cost of a call, looked up in O(1) per call.

Prices come from the table litellm ships as a JSON file, read directly (importing litellm
itself costs seconds). The table is loaded once per process; each model name is resolved
once and remembered, misses included.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from .types import Usage

__all__ = ["cost_of", "price_of"]

_FREE_PREFIXES = ("local/",)


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "model_prices_and_context_window_backup.json"
    )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@functools.lru_cache(maxsize=4096)
def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token for ``model``, or ``None`` when unknown."""
    table = _table()
    candidates = [model]
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        entry = table.get(name)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return float(entry["input_cost_per_token"]), float(
                entry.get("output_cost_per_token", 0.0)
            )
    return None


def cost_of(model: str, usage: Usage) -> float | None:
    """USD cost of ``usage`` on ``model``: 0 for local models, ``None`` when unknown."""
    if model.startswith(_FREE_PREFIXES):
        return 0.0
    price = price_of(model)
    if price is None:
        return None
    return usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]
