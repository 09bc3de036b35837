"""Multi-hop retrieval: DSPy's multi-hop question answering tutorial, written in lmforge.

Each question needs two facts from different passages of the Aurora K3 manual
(``rag/corpus.jsonl``). The program writes a search query, retrieves, writes a second
query knowing what it found, retrieves again, and answers from everything it gathered,
as DSPy's ``SimplifiedBaleen``/multi-hop tutorial does with ``dspy.Retrieve`` and one
query generator per hop. Two labeled questions with their gold queries and answers
(``rag/multihop.jsonl``, ``train``) serve as few-shot demos for every step.

    python -m lmforge.examples.multihop --limit 2
    python -m lmforge.examples.multihop --model openai/gpt-4o-mini

It prints each answer and how many of the question's gold passages were gathered, and
saves the program as an artifact.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

import lmforge as lf
from lmforge.modules import BM25Retriever, Retrieve

from .rag import DATA, AnswerFromContext
from .rag import metric as contains_answer

__all__ = ["GenerateQuery", "MultiHop", "load", "main", "metric", "with_demos"]


class GenerateQuery(lf.Signature):
    """Write a short search query for the fact still missing to answer the question."""

    context: list[str] = lf.InputField(desc="passages found so far")
    question: str = lf.InputField()
    query: str = lf.OutputField(desc="a few keywords")


class MultiHop(lf.Module):
    """``hops`` rounds of query -> retrieve, then an answer from all passages found."""

    def __init__(self, hops: int = 2, k: int = 2) -> None:
        if hops < 1 or k < 1:
            raise lf.UsageError("MultiHop needs hops >= 1 and k >= 1")
        self.hops, self.k = hops, k
        self.retrieve = Retrieve(BM25Retriever.from_jsonl(DATA / "corpus.jsonl"), k=k)
        self.generate_query = [lf.Predict(GenerateQuery, max_tokens=24) for _ in range(hops)]
        # A plain answer step: a 270M base model loops in a free-text reasoning line.
        self.answer = lf.Predict(AnswerFromContext, max_tokens=48)

    def forward(self, question: str) -> lf.Prediction:
        context: list[str] = []
        queries = []
        for step in self.generate_query:
            query = str(step(context=context, question=question).query).strip() or question
            queries.append(query)
            context += [p for p in self.retrieve(query=query).passages if p not in context]
        answer = self.answer(context=context, question=question)
        return lf.Prediction(context=context, queries=queries, answer=answer.answer)

    def spec_config(self) -> dict[str, Any]:
        return {"hops": self.hops, "k": self.k}


def load(split: Literal["train", "test"]) -> list[lf.Example]:
    """The labeled two-hop questions of one split."""
    lines = (DATA / "multihop.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [lf.Example(row).with_inputs("question") for row in rows if row["split"] == split]


def with_demos(program: MultiHop, examples: list[lf.Example]) -> MultiHop:
    """Each hop's query step gets the labeled query for that hop, with the passages the
    earlier hops' labeled queries retrieve; the answer step gets the labeled answer, with
    the passages all of them retrieve."""
    for hop, step in enumerate(program.generate_query):
        step.demos = [
            {
                "context": _gathered(program, example.queries[:hop]),
                "question": example.question,
                "query": example.queries[hop],
            }
            for example in examples
        ]
    program.answer.demos = [
        {
            "context": _gathered(program, example.queries),
            "question": example.question,
            "answer": example.answer,
        }
        for example in examples
    ]
    return program


def _gathered(program: MultiHop, queries: list[str]) -> list[str]:
    """The passages ``queries`` retrieve, in order, without repeats."""
    context: list[str] = []
    for query in queries:
        found = program.retrieve(query=query).passages
        context += [passage for passage in found if passage not in context]
    return context


def metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
    """True when the answer contains the labeled answer (as in the RAG example)."""
    return contains_answer(example, prediction, trace)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Answer the test questions, print each answer and the retrieval recall, save."""
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.examples.multihop", description=__doc__
    )
    parser.add_argument("--model", default=None, help="LM (default: $LMFORGE_MODEL or local)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--out", type=Path, default=Path("multihop.json"), help="artifact path")
    args = parser.parse_args(argv)

    lm = lf.LM(args.model)
    program = with_demos(MultiHop(), load("train"))
    questions = load("test")[: args.limit]
    passages = {p.id: p.text for p in program.retrieve.retriever.passages}
    correct = gathered = wanted = 0
    with lf.use(lm=lm):
        for example in questions:
            try:
                result = program(question=example.question)
            except lf.LMForgeError as exc:  # one unparsable answer does not end the run
                print(f"Q: {example.question}\n   failed: {type(exc).__name__}: {exc}")
                continue
            ok = metric(example, result)
            hits = sum(passages[pid] in result.context for pid in example.passage_ids)
            correct += ok
            gathered += hits
            wanted += len(example.passage_ids)
            print(
                f"Q: {example.question}\n   queries: {result.queries}\n   answer: "
                f"{result.answer!r} (gold {example.answer!r}, {'ok' if ok else 'wrong'}; "
                f"{hits}/{len(example.passage_ids)} gold passages gathered)"
            )
    program.save(args.out, meta={"example": "multihop", "model": lm.model})
    print(
        f"multihop on {lm.model}: {correct}/{len(questions)} answers contain the labeled answer;"
        f" {gathered}/{wanted} gold passages gathered; saved {args.out}"
    )
    return {"correct": correct, "gathered": gathered, "wanted": wanted, "artifact": str(args.out)}


if __name__ == "__main__":
    main()
