"""Prices come from litellm's public table (``litellm.model_cost``), looked up once per model;
litellm is imported only when a model that may have a price is first priced."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from lmforge.lm.pricing import cost_of, price_of
from lmforge.lm.types import Usage


@pytest.fixture
def priced_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A model known only to ``litellm.model_cost`` (the object pricing reads)."""
    from lmforge.lm.pricing import _table

    _table()  # imports litellm the way pricing does (offline price table)
    import litellm

    name = "lmforge-pricing-test/model"
    monkeypatch.setitem(
        litellm.model_cost, name, {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6}
    )
    price_of.cache_clear()
    yield name
    price_of.cache_clear()


def test_prices_come_from_litellms_public_table(priced_model: str) -> None:
    assert price_of(priced_model) == (2e-6, 8e-6)
    assert cost_of(priced_model, Usage(1000, 100)) == pytest.approx(1000 * 2e-6 + 100 * 8e-6)


def test_each_model_is_resolved_once(priced_model: str) -> None:
    price_of(priced_model)
    before = price_of.cache_info()
    for _ in range(100):
        price_of(priced_model)
    after = price_of.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (100, 0)


def test_entries_without_a_numeric_price_are_unknown(
    priced_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import litellm

    monkeypatch.setitem(litellm.model_cost, priced_model, {"input_cost_per_token": None})
    price_of.cache_clear()
    assert price_of(priced_model) is None and cost_of(priced_model, Usage(1, 1)) is None


def _modules_after(code: str) -> list[str]:
    script = (
        "import sys, json\n"
        f"{code}\n"
        "print(json.dumps([m for m in ('litellm',) if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_unpriced_providers_never_import_litellm() -> None:
    code = (
        "from lmforge.lm.pricing import cost_of\n"
        "from lmforge.lm.types import Usage\n"
        "assert cost_of('local/gemma-3-270m', Usage(5, 5)) == 0.0\n"
        "assert cost_of('hosted_vllm/gpt-4o-mini', Usage(5, 5)) is None\n"
        "assert cost_of('test/function', Usage(5, 5)) is None"
    )
    assert _modules_after(code) == []


def test_pricing_a_provider_model_loads_litellm_offline() -> None:
    code = (
        "import os\n"
        "os.environ.pop('LITELLM_LOCAL_MODEL_COST_MAP', None)\n"
        "from lmforge.lm.pricing import cost_of\n"
        "from lmforge.lm.types import Usage\n"
        "assert cost_of('openai/gpt-4o-mini', Usage(1000, 0)) > 0\n"
        # litellm read its bundled table, not the network copy
        "assert os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] == 'True'"
    )
    assert _modules_after(code) == ["litellm"]
