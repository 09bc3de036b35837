"""The RAG example end to end on the embedded local model (retrieve -> ChainOfThought)."""

from __future__ import annotations

from pathlib import Path

import lmforge as lf
import pytest

pytestmark = pytest.mark.local_model

pytest.importorskip("llama_cpp", reason="the embedded local model needs the 'local' extra")
pytest.importorskip("bm25s", reason="the RAG example needs the 'retrieval' extra")
pytest.importorskip("Stemmer", reason="the RAG example needs the 'retrieval' extra")


def test_rag_example_answers_on_the_local_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.examples import rag

    out = tmp_path / "rag.json"
    figures = rag.main(["--model", "local/gemma-3-270m", "--limit", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert figures["total"] == 3
    assert figures["retrieved"] == 3  # BM25 finds the labeled passage for these questions
    assert "rag on local/gemma-3-270m" in printed
    assert printed.count("answer: ") == 3  # every question got a parsed answer
    loaded = lf.load(out)
    with lf.use(lm=lf.LM("local/gemma-3-270m")), lf.track() as tracker:
        prediction = loaded(question="What does error E3 mean?")
    assert isinstance(prediction.answer, str) and prediction.answer.strip()
    assert prediction.reasoning.strip()
    assert any("grinder is blocked" in passage for passage in prediction.context)
    [call] = tracker.predictions
    assert call.predictor is loaded.steps[1].predict
    assert call.demos_used == 2
