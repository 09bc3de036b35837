"""Retrieve, the retriever protocol and BM25Retriever (bm25s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.modules import BM25Retriever, Chain, ChainOfThought, Passage, Retrieve, Retriever
from lmforge.testing import FunctionLM

pytest.importorskip("bm25s")
pytest.importorskip("Stemmer")

CORPUS = [
    {"id": "tank", "text": "The removable water tank holds 1.8 litres.", "title": "Water tank"},
    {
        "id": "grinder",
        "text": "The conical burr grinder has 30 grind settings.",
        "title": "Grinder",
    },
    {"id": "warranty", "text": "The machine comes with a 2-year warranty.", "title": "Warranty"},
    {"id": "descale", "text": "Descale the machine every 3 months.", "title": "Descaling"},
]


def reply(**fields: Any) -> str:
    body = "".join(
        f"[[ ## {k} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}\n\n"
        for k, v in fields.items()
    )
    return body + "[[ ## completed ## ]]"


class Fixed:
    """A retriever without spec_config: always the same passages."""

    def search(self, query: str, k: int) -> list[Passage]:
        return [Passage(text=f"about {query}", id="1", score=1.0)] * k


def test_bm25_ranks_the_relevant_passage_first_and_stems_words() -> None:
    retriever = BM25Retriever(CORPUS)
    hits = retriever.search("How often should I descale it?", 2)
    assert hits[0].id == "descale"
    assert hits[0].score > 0
    assert hits[0].metadata == {"title": "Descaling"}
    assert retriever.search("grind setting", 1)[0].id == "grinder"  # "setting" ~ "settings"
    assert retriever.search("zebra xylophone", 3) == []
    assert len(retriever.search("the machine", 10)) <= len(CORPUS)
    assert isinstance(retriever, Retriever)


def test_bm25_from_jsonl_keeps_ids_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in CORPUS) + "\n")
    retriever = BM25Retriever.from_jsonl(path)
    assert len(retriever) == 4
    [hit] = retriever.search("warranty years", 1)
    assert (hit.id, hit.metadata["title"]) == ("warranty", "Warranty")
    path.write_text('{"body": "no text"}\n')
    with pytest.raises(lf.UsageError, match="expected an object with 'text'"):
        BM25Retriever.from_jsonl(path)


def test_bm25_rejects_an_unknown_stemmer() -> None:
    with pytest.raises(lf.UsageError, match="stemmer language"):
        BM25Retriever(CORPUS, stemmer="klingon")
    exact = BM25Retriever(CORPUS, stemmer=None)
    assert exact.search("descale", 1)[0].id == "descale"


def test_retrieve_module_returns_texts_and_hits() -> None:
    retrieve = Retrieve(BM25Retriever(CORPUS), k=2)
    prediction = retrieve(query="water tank size")
    assert prediction.passages[0] == CORPUS[0]["text"]
    assert prediction.hits[0].id == "tank"
    assert retrieve.named_predictors() == []
    assert [f.name for f in retrieve.signature.fields] == ["query", "passages"]
    with pytest.raises(lf.UsageError, match="query="):
        retrieve(question="x")


async def test_retrieve_async_uses_the_retriever() -> None:
    retrieve = Retrieve(Fixed(), k=2, query="question", output="context")
    prediction = await retrieve.acall(question="tea")
    assert prediction.context == ["about tea", "about tea"]


def test_rag_chain_retrieves_then_answers(tmp_path: Path) -> None:
    def fake(request: lf.LMRequest) -> str:
        user = request.messages[-1]["content"]
        return reply(
            reasoning="the passage says", answer="1.8 litres" if "1.8 litres" in user else "?"
        )

    program = Chain(
        Retrieve(BM25Retriever(CORPUS), k=2, query="question", output="context"),
        ChainOfThought("context: list[str], question -> answer"),
    )
    assert [f.name for f in program.signature.input_fields] == ["question"]
    with lf.use(lm=FunctionLM(fake)):
        assert program(question="How big is the water tank?").answer == "1.8 litres"
        results = program.batch(
            [{"question": "water tank"}, {"question": "tank capacity"}], concurrency=2
        )
    assert [r.answer for r in results] == ["1.8 litres", "1.8 litres"]
    path = tmp_path / "rag.json"
    program.save(path)
    loaded = lf.load(path)
    with lf.use(lm=FunctionLM(fake)):
        assert loaded(question="How big is the water tank?").answer == "1.8 litres"
    assert loaded.steps[0].retriever.search("tank", 1)[0].id == "tank"


def test_a_retriever_without_spec_config_needs_program_on_load(tmp_path: Path) -> None:
    program = Chain(
        Retrieve(Fixed(), query="question", output="context"), "context: list[str] -> answer"
    )
    path = tmp_path / "rag.json"
    program.save(path)
    with pytest.raises(lf.ArtifactError, match="retriever was not saved"):
        lf.load(path)
    rebuilt = Chain(
        Retrieve(Fixed(), query="question", output="context"), "context: list[str] -> answer"
    )
    assert lf.load(path, program=rebuilt) is rebuilt


def test_retrieve_constructor_errors() -> None:
    with pytest.raises(lf.UsageError, match="not a retriever"):
        Retrieve(object())  # type: ignore[arg-type]
    with pytest.raises(lf.UsageError, match="k >= 1"):
        Retrieve(Fixed(), k=0)
