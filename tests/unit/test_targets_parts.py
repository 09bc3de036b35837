"""Pieces of the deploy targets: program signatures, vLLM structured outputs, cache hints,
rate-limit buckets and drift statistics."""

from __future__ import annotations

from typing import Any

import lmforge as lf
import pytest
from lmforge.adapters import CompletionAdapter
from lmforge.lm.types import ConstraintSegment, LMRequest, OutputConstraint
from lmforge.targets.backends import CacheHintBackend, VLLMBackend, constraint_to_structured
from lmforge.targets.drift import DriftMonitor, psi, reference_stats
from lmforge.targets.guard import TokenBuckets
from lmforge.targets.program import build_models, output_text, program_name, program_signature


class TwoStep(lf.Module):
    def __init__(self) -> None:
        self.summarize = lf.Predict("ticket -> summary")
        self.route = lf.Predict("summary -> team: Literal['billing', 'tech'], urgent: bool")

    def forward(self, **inputs: Any) -> lf.Prediction:
        return self.route(summary=self.summarize(**inputs).summary)


class Declared(TwoStep):
    signature = lf.Signature.parse("ticket: str -> team: str")


def test_program_signature_rules() -> None:
    single = lf.Predict("question -> answer")
    assert program_signature(single) is single.signature
    composed = program_signature(TwoStep())
    assert [f.name for f in composed.input_fields] == ["ticket"]
    assert [f.name for f in composed.output_fields] == ["team", "urgent"]
    assert program_signature(Declared()) is Declared.signature
    with pytest.raises(lf.UsageError, match="signature"):
        program_signature(lf.Module())


def test_models_and_output_text() -> None:
    sig = program_signature(TwoStep())
    models = build_models("two-step", sig)
    assert models.request.__name__ == "TwoStepRequest"
    assert models.response.model_json_schema()["properties"]["urgent"]["type"] == "boolean"
    assert output_text(sig, {"team": "tech", "urgent": True}) == '{"team": "tech", "urgent": true}'
    assert output_text(lf.Signature.parse("a -> b"), {"b": "x"}) == "x"
    with pytest.raises(lf.UsageError, match="URL-safe"):
        program_name("no spaces please")


def test_constraints_become_vllm_structured_outputs() -> None:
    sig = lf.Signature.parse("ticket -> team: Literal['billing', 'tech']")
    choice = constraint_to_structured(CompletionAdapter().constraint(sig))
    assert choice == {"choice": [" billing", " tech"]}
    two = lf.Signature.parse("ticket -> team: Literal['billing', 'tech'], priority: int")
    regex = constraint_to_structured(CompletionAdapter().constraint(two))
    assert regex == {"regex": r" (billing|tech)\nPriority: -?\d+"}
    import re

    assert re.fullmatch(regex["regex"], " tech\nPriority: 3")
    nested = OutputConstraint(
        (ConstraintSegment(text=" "), ConstraintSegment(schema={"type": "object"}))
    )
    assert constraint_to_structured(nested) is None


def test_vllm_wire_request_uses_served_name_and_constraint() -> None:
    sig = lf.Signature.parse("ticket -> team: Literal['billing', 'tech']")
    prompt = CompletionAdapter().format(sig, [], {"ticket": "refund"})
    request = LMRequest(
        model="hosted_vllm/x",
        prompt=prompt.text,
        constraint=prompt.constraint,
        params={"max_tokens": 8, "rollout_id": 3},
    )
    wire = VLLMBackend("http://127.0.0.1:9", "triage-lora").wire_request(request)
    assert wire.model == "hosted_vllm/triage-lora" and wire.constraint is None
    assert wire.params == {"max_tokens": 8, "structured_outputs": {"choice": [" billing", " tech"]}}
    free = VLLMBackend("http://127.0.0.1:9", "t", constrain=False).wire_request(request)
    assert "structured_outputs" not in free.params


def test_openai_cache_key_follows_the_static_prefix() -> None:
    hints = CacheHintBackend(inner=None, style="openai")  # type: ignore[arg-type]

    def key(system: str, user: str) -> str:
        messages = ({"role": "system", "content": system}, {"role": "user", "content": user})
        return hints.hinted(LMRequest(model="openai/gpt-4o-mini", messages=messages)).params[
            "prompt_cache_key"
        ]

    assert key("rules", "a") == key("rules", "b")
    assert key("rules", "a") != key("other rules", "a")


def test_token_buckets_refill_at_the_rate() -> None:
    buckets = TokenBuckets(per_minute=60, burst=2)
    assert buckets.take("k", now=0.0) == 0 and buckets.take("k", now=0.0) == 0
    assert buckets.take("k", now=0.0) == pytest.approx(1.0)  # one token per second
    assert buckets.take("k", now=1.0) == 0
    assert buckets.take("other", now=1.0) == 0  # per key


def test_psi_and_categorical_drift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.25
    sig = lf.Signature.parse("text -> label: Literal['a', 'b']")
    reference = reference_stats(
        sig, [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}] * 20
    )
    monitor = DriftMonitor(reference, window=100)
    for _ in range(40):
        monitor.observe({"text": "x"}, {"label": "b"}, 0.1)
    report = monitor.report()
    assert report["label.label"]["level"] == "significant"
    assert report["input_length.text"]["level"] == "stable"
    with pytest.raises(lf.UsageError, match="version"):
        DriftMonitor({"version": 99, "statistics": {}})


def test_fallback_answers_are_priced_at_the_fallback_models_rates() -> None:
    # lf.LM prices unpriced answers by its own model: a gpt-4o-mini fallback was billed as
    # gpt-4o (about 17 times too much).
    from lmforge.errors import ProviderError
    from lmforge.lm.pricing import cost_of
    from lmforge.lm.types import LMResponse, Usage
    from lmforge.targets.backends import FallbackBackend

    class Down:
        def complete(self, request: LMRequest) -> LMResponse:
            raise ProviderError("down", model=request.model, retryable=False)

        async def acomplete(self, request: LMRequest) -> LMResponse:
            return self.complete(request)

    class Up:
        def complete(self, request: LMRequest) -> LMResponse:
            return LMResponse(texts=("hi",), usage=Usage(1000, 1000), model=request.model)

        async def acomplete(self, request: LMRequest) -> LMResponse:
            return self.complete(request)

    backend = FallbackBackend(Down(), Up(), "openai/gpt-4o-mini")
    lm = lf.LM("openai/gpt-4o", backend=backend, cache=False, retry=1)
    usage = Usage(1000, 1000)
    expected = cost_of("openai/gpt-4o-mini", usage)
    if expected is None:
        pytest.skip("no price table (litellm not installed)")
    assert expected != cost_of("openai/gpt-4o", usage)
    assert lm.complete(lm.request(prompt="x")).cost == pytest.approx(expected)
