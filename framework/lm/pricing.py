"""USD cost of a call, looked up in O(1) per call.

Prices come from litellm's public price table, ``litellm.model_cost`` (its bundled copy:
``LITELLM_LOCAL_MODEL_COST_MAP`` keeps the import off the network). Importing litellm costs
seconds, so it happens on the first call that prices a model litellm may know, never at
``import lmforge`` and never for models without a per-token price (the embedded local model,
self-hosted vLLM servers, lmforge's test fakes). Each model name is resolved once and
remembered, misses included.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from .types import Usage

__all__ = ["cost_of", "price_of"]

_FREE_PREFIXES = ("local/",)
# Self-hosted servers bill no tokens, and litellm's table has no entry for them (stripping
# the prefix would price a self-hosted "gpt-4o-mini" at OpenAI's rates); ``test/`` names
# lmforge's fake LMs. Their calls count as unpriced without loading litellm.
_UNPRICED_PREFIXES = ("hosted_vllm/", "test/")


@functools.lru_cache(maxsize=1)
def _table() -> Mapping[str, Any]:
    # Set before the import: otherwise litellm fetches its price table over the network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    table = getattr(litellm, "model_cost", None)
    return table if isinstance(table, Mapping) else {}


@functools.lru_cache(maxsize=4096)
def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token for ``model``, or ``None`` when unknown."""
    if model.startswith(_UNPRICED_PREFIXES):
        return None
    table = _table()
    candidates = [model]
    if "/" in model:  # litellm keys some providers' models without the provider prefix
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        entry = table.get(name)
        if not isinstance(entry, Mapping):
            continue
        price_in = entry.get("input_cost_per_token")
        price_out = entry.get("output_cost_per_token", 0.0)
        if isinstance(price_in, int | float) and isinstance(price_out, int | float):
            return float(price_in), float(price_out)
    return None


def cost_of(model: str, usage: Usage) -> float | None:
    """USD cost of ``usage`` on ``model``: 0 for local models, ``None`` when unknown."""
    if model.startswith(_FREE_PREFIXES):
        return 0.0
    price = price_of(model)
    if price is None:
        return None
    return usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]
