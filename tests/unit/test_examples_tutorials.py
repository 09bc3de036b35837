"""The two DSPy tutorials written in lmforge (intent classification, multi-hop retrieval),
run against fake LMs: the program's flow, demos, artifacts and datasets."""

from __future__ import annotations

import json
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM

pytest.importorskip("bm25s", reason="the multi-hop example needs the 'retrieval' extra")


def _multihop_reply(request: LMRequest) -> str:
    system = str(request.messages[0]["content"]) if request.messages else ""
    if "[[ ## query ## ]]" in system:
        context = str(request.messages[-1]["content"])
        # the second hop sees the passages of the first
        query = "grinder grind settings" if "Error E3 means" in context else "grinder blocked"
        return f"[[ ## query ## ]]\n{query}\n\n[[ ## completed ## ]]"
    return "[[ ## answer ## ]]\n30\n\n[[ ## completed ## ]]"


def test_multihop_writes_a_second_query_from_what_the_first_found(tmp_path: Path) -> None:
    from lmforge.examples import multihop

    program = multihop.with_demos(multihop.MultiHop(), multihop.load("train"))
    question = multihop.load("test")[0]
    with lf.use(lm=FunctionLM(_multihop_reply)):
        result = program(question=question.question)
    assert result.queries == ["grinder blocked", "grinder grind settings"]
    passages = {p.id: p.text for p in program.retrieve.retriever.passages}
    assert all(passages[pid] in result.context for pid in question.passage_ids)
    assert multihop.metric(question, result)
    # each hop's demos carry the passages the earlier gold queries retrieve
    first, second = program.generate_query
    assert all(demo["context"] == [] for demo in first.demos)
    assert all(demo["context"] for demo in second.demos)
    path = tmp_path / "multihop.json"
    program.save(path)
    loaded = lf.load(path)
    assert isinstance(loaded, multihop.MultiHop)
    assert [len(step.demos) for step in loaded.generate_query] == [2, 2]


def test_multihop_example_main_reports_recall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.examples import multihop

    monkeypatch.setattr(lf, "LM", lambda model=None: FunctionLM(_multihop_reply))
    figures = multihop.main(["--limit", "1", "--out", str(tmp_path / "m.json")])
    assert figures == {
        "correct": 1,
        "gathered": 2,
        "wanted": 2,
        "artifact": str(tmp_path / "m.json"),
    }
    assert "1/1 answers contain the labeled answer" in capsys.readouterr().out


def test_multihop_data_names_real_passages() -> None:
    from lmforge.examples import multihop

    ids = {
        json.loads(line)["id"]
        for line in (multihop.DATA / "corpus.jsonl").read_text().splitlines()
        if line
    }
    for example in multihop.load("train") + multihop.load("test"):
        assert set(example.passage_ids) <= ids
        assert len(example.queries) == 2


def test_intent_classifier_signature_matches_the_tutorial() -> None:
    from lmforge.examples import intent_classifier

    program = intent_classifier.make_program()
    assert program.signature.signature.startswith("text -> intent: Literal[")
    reply = "[[ ## intent ## ]]\nrefund_status\n\n[[ ## completed ## ]]"
    with lf.use(lm=FunctionLM(lambda request: reply)):
        assert program(text="where is my refund?").intent == "refund_status"
