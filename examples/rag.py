"""Retrieval-augmented answers over the manual of a (fictional) espresso machine.

The program is a two-step :class:`~lmforge.modules.Chain`: ``Retrieve`` (BM25 over the
46 manual passages in ``rag/corpus.jsonl``) finds the passages for a question, then a
``ChainOfThought`` step answers from them. Labeled questions are in
``rag/questions.jsonl``: three ``train`` questions (with a worked reasoning) serve as
few-shot demos, the ``test`` questions are scored.

Run it (the embedded local model by default, or ``--model`` / ``$LMFORGE_MODEL``)::

    python -m lmforge.examples.rag --limit 3
    python examples/rag.py --model openai/gpt-4o-mini

It prints each answer, the share of answers containing the labeled answer, how often the
labeled passage was retrieved, and saves the program (retriever index included) as an
artifact that ``lf.load`` rebuilds without this file.
"""

from __future__ import annotations

import argparse
import json
import re
import string
from pathlib import Path
from typing import Any, Literal

import lmforge as lf
from lmforge.modules import BM25Retriever, Chain, ChainOfThought, Retrieve

__all__ = ["DATA", "AnswerFromContext", "load", "main", "make_program", "metric", "with_demos"]

DATA = Path(__file__).resolve().parent / "rag"


class AnswerFromContext(lf.Signature):
    """Answer the question about the Aurora K3 espresso machine in a few words, from the context."""

    context: list[str] = lf.InputField(desc="passages from the product manual")
    question: str = lf.InputField()
    answer: str = lf.OutputField(desc="a short answer taken from the passages")


def make_program(k: int = 3) -> Chain:
    """A fresh RAG program: retrieve ``k`` passages, then reason and answer."""
    retriever = BM25Retriever.from_jsonl(DATA / "corpus.jsonl")
    return Chain(
        Retrieve(retriever, k=k, query="question", output="context"),
        ChainOfThought(AnswerFromContext, max_tokens=200),
        outputs=["context", "reasoning", "answer"],
    )


def load(split: Literal["train", "test"]) -> list[lf.Example]:
    """The labeled questions of one split."""
    rows = [
        json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines() if line
    ]
    return [lf.Example(row).with_inputs("question") for row in rows if row["split"] == split]


def with_demos(program: Chain, examples: list[lf.Example]) -> Chain:
    """Use labeled questions (with the passages retrieved for them) as the answer step's demos."""
    retrieve, answer = program.steps
    answer.predict.demos = [
        {
            "context": retrieve(question=ex.question).context,
            "question": ex.question,
            "reasoning": ex.reasoning,
            "answer": ex.answer,
        }
        for ex in examples
    ]
    return program


def _normal(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def metric(example: lf.Example, prediction: lf.Prediction, trace: Any = None) -> bool:
    """True when the predicted answer contains the labeled answer (case, punctuation and
    articles ignored)."""
    return _normal(example.answer) in _normal(str(prediction.answer))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Answer the test questions, print each answer and the scores, save the program."""
    parser = argparse.ArgumentParser(prog="python -m lmforge.examples.rag", description=__doc__)
    parser.add_argument(
        "--model", default=None, help="LM (default: $LMFORGE_MODEL or the local model)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="answer only the first N test questions"
    )
    parser.add_argument(
        "--k", type=int, default=3, help="passages retrieved per question (default 3)"
    )
    parser.add_argument("--demos", type=int, default=2, help="labeled demos to use (default 2)")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel questions (default 1)")
    parser.add_argument("--out", type=Path, default=Path("rag.json"), help="artifact path")
    args = parser.parse_args(argv)

    lm = lf.LM(args.model)
    program = with_demos(make_program(args.k), load("train")[: args.demos])
    questions = load("test")[: args.limit]
    passages = {p.id: p.text for p in program.steps[0].retriever.passages}
    with lf.use(lm=lm):
        results = program.batch([ex.inputs() for ex in questions], concurrency=args.concurrency)

    correct = found = 0
    for ex, result in zip(questions, results, strict=True):
        if isinstance(result, lf.BatchError):
            print(f"Q: {ex.question}\n   failed: {result.error}")
            continue
        hit = passages[ex.passage_id] in result.context
        ok = metric(ex, result)
        correct += ok
        found += hit
        verdict = "ok" if ok else "wrong"
        print(
            f"Q: {ex.question}\n   answer: {result.answer!r} (gold {ex.answer!r}, {verdict}; "
            f"gold passage {'retrieved' if hit else 'missed'})"
        )
    program.save(args.out, meta={"example": "rag", "model": lm.model})
    total = len(questions)
    print(
        f"rag on {lm.model}: {correct}/{total} answers contain the labeled answer; the labeled "
        f"passage was retrieved for {found}/{total}; saved {args.out}"
    )
    return {"correct": correct, "retrieved": found, "total": total, "artifact": str(args.out)}


if __name__ == "__main__":
    main()
