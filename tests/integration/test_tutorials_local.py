"""The DSPy tutorials written in lmforge run offline on the embedded local model."""

from __future__ import annotations

from pathlib import Path

import lmforge as lf
import pytest

pytestmark = pytest.mark.local_model

pytest.importorskip("llama_cpp", reason="the embedded local model needs the 'local' extra")
pytest.importorskip("bm25s", reason="the multi-hop example needs the 'retrieval' extra")


def test_multihop_tutorial_runs_on_the_local_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.examples import multihop

    out = tmp_path / "multihop.json"
    figures = multihop.main(["--model", "local/gemma-3-270m", "--limit", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert figures["wanted"] == 4
    assert figures["gathered"] >= 1  # BM25 over the model's own queries finds gold passages
    assert printed.count("queries: ") == 2 and printed.count("answer: ") == 2
    assert isinstance(lf.load(out), multihop.MultiHop)


def test_intent_classifier_tutorial_compiles_on_the_local_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.examples import intent_classifier

    out = tmp_path / "intents.json"
    intent_classifier.main(["--model", "local/gemma-3-270m", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "intent_classifier on local/gemma-3-270m" in printed
    compiled = lf.load(out)
    assert compiled.predictors()[0].demos, "BootstrapFewShot compiled demos in"
