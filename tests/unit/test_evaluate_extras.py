"""lf.evaluate extras DSPy users expect: a table of rows, saving rows to CSV/JSON, per-row
callbacks, plain functions as programs, and lists of gold answers for the built-in
metrics."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.evaluation import EvaluationRow, aevaluate
from lmforge.testing import DummyLM


def dataset() -> list[lf.Example]:
    return [
        lf.Example(question="Capital of France?", answer=["Paris", "paris, france"]),
        lf.Example(question="Capital of [bold]Spain[/bold]?", answer="Madrid"),
        lf.Example(question="boom", answer="x"),
    ]


def _inputs(examples: list[lf.Example]) -> list[lf.Example]:
    return [ex.with_inputs("question") for ex in examples]


ANSWERS = {"France": "Paris, France", "Spain": "Barcelona"}


def capital(question: str) -> lf.Prediction:
    if question == "boom":
        raise ValueError("no capital for boom")
    country = next(k for k in ANSWERS if k in question)
    return lf.Prediction(answer=ANSWERS[country])


def test_a_plain_function_is_a_program_and_may_return_a_dict() -> None:
    data = _inputs(dataset())
    result = lf.evaluate(capital, data, lf.metrics.exact_match, progress=False)
    assert result.scores == [1.0, 0.0, 0.0]
    assert result.failures[0].error_type == "ValueError"

    def as_dict(question: str) -> dict[str, Any]:
        return {"answer": "Paris"}

    assert lf.evaluate(as_dict, data[:1], lf.metrics.exact_match, progress=False).score == 1.0

    async def async_program(question: str) -> dict[str, Any]:
        return {"answer": "paris, france"}

    assert asyncio.run(aevaluate(async_program, data[:1], lf.metrics.exact_match)).score == 1.0
    with pytest.raises(lf.UsageError, match=r"a program function must return an lf\.Prediction"):
        lf.evaluate(lambda **inputs: "Paris", data[:1], lf.metrics.exact_match, progress=False)
    with pytest.raises(lf.UsageError, match=r"evaluate needs a program: .* got int"):
        lf.evaluate(3, data, lf.metrics.exact_match)  # type: ignore[arg-type]


def test_a_module_program_still_runs_through_its_lm() -> None:
    lm = DummyLM({"France": {"answer": "Paris"}, "Spain": {"answer": "Madrid"}, "boom": {}})
    program = lf.Predict("question -> answer", lm=lm)
    result = lf.evaluate(program, _inputs(dataset())[:2], lf.metrics.exact_match, progress=False)
    assert result.scores == [1.0, 1.0]


def test_gold_lists_score_the_best_match() -> None:
    example = lf.Example(question="q", answer=["Paris", "paris, france"]).with_inputs("question")
    assert lf.metrics.exact_match(example, lf.Prediction(answer="Paris, France"))
    assert not lf.metrics.exact_match(example, lf.Prediction(answer="Lyon"))
    assert lf.metrics.contains(example, lf.Prediction(answer="It is Paris."))
    assert lf.metrics.f1(example, lf.Prediction(answer="paris france")) == 1.0
    assert lf.metrics.f1(example, lf.Prediction(answer="paris")) == 1.0
    # a list-valued prediction is still compared with the list as a whole
    listed = lf.Example(question="q", tags=["a", "b"]).with_inputs("question")
    assert lf.metrics.exact_match(listed, lf.Prediction(tags=["a", "b"]))
    assert not lf.metrics.exact_match(listed, lf.Prediction(tags=["a"]))


def test_on_row_is_called_once_per_example_as_it_finishes() -> None:
    seen: list[EvaluationRow] = []
    threads: set[int] = set()

    def on_row(row: EvaluationRow) -> None:
        threads.add(threading.get_ident())
        seen.append(row)

    result = lf.evaluate(
        capital,
        _inputs(dataset()),
        lf.metrics.exact_match,
        progress=False,
        on_row=on_row,
        concurrency=3,
    )
    assert sorted(row.index for row in seen) == [0, 1, 2]
    assert {row.index: row.score for row in seen} == {0: 1.0, 1: 0.0, 2: 0.0}
    assert len(threads) == 1  # one call at a time, from one thread
    assert result.n == 3


def test_an_on_row_error_stops_the_evaluation_with_a_clear_error() -> None:
    calls: list[int] = []

    def on_row(row: EvaluationRow) -> None:
        calls.append(row.index)
        raise KeyError("score")

    with pytest.raises(lf.UsageError, match=r"the on_row callback raised on example \d: KeyError"):
        lf.evaluate(
            capital,
            _inputs(dataset()),
            lf.metrics.exact_match,
            progress=False,
            on_row=on_row,
            concurrency=1,
        )
    assert calls == [0]  # no further example was started, nor reported
    with pytest.raises(lf.UsageError, match="on_row must be a function"):
        lf.evaluate(capital, _inputs(dataset()), lf.metrics.exact_match, on_row=5)  # type: ignore[arg-type]


def _result() -> lf.EvaluationResult:
    return lf.evaluate(capital, _inputs(dataset()), lf.metrics.exact_match, progress=False)


def test_display_prints_rows_with_inputs_outputs_gold_score_and_failures() -> None:
    out = io.StringIO()
    _result().display(n=2, file=out)
    text = out.getvalue()
    assert "question" in text and "answer (pred)" in text and "answer (gold)" in text
    assert "Paris, France" in text and '["Paris", "paris, france"]' in text
    assert "[bold]Spain[/bold]" in text  # values are never read as rich markup
    assert "boom" not in text and "1 more row(s)" in text
    assert "exact_match: 33.3% on 3 example(s)" in text
    everything = io.StringIO()
    _result().display(n=None, file=everything)
    assert (
        "✗" in everything.getvalue() and "ValueError: no capital for boom" in everything.getvalue()
    )
    with pytest.raises(lf.UsageError, match="must be a whole number of rows"):
        _result().display(n=-1)


def test_display_table_prints_after_evaluating(capsys: pytest.CaptureFixture[str]) -> None:
    lf.evaluate(
        capital, _inputs(dataset()), lf.metrics.exact_match, progress=False, display_table=1
    )
    printed = capsys.readouterr().out
    assert "Paris, France" in printed and "Barcelona" not in printed and "2 more row(s)" in printed
    lf.evaluate(capital, _inputs(dataset()), lf.metrics.exact_match, progress=False)
    assert capsys.readouterr().out == ""  # no table unless asked
    with pytest.raises(lf.UsageError, match="display_table must be True, False or a number"):
        lf.evaluate(capital, _inputs(dataset()), lf.metrics.exact_match, display_table="all")  # type: ignore[arg-type]


def test_save_writes_one_row_per_example_as_csv_or_json(tmp_path: Path) -> None:
    result = _result()
    result.save(tmp_path / "rows.csv")
    with (tmp_path / "rows.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["input.question"] == "Capital of France?"
    assert rows[0]["output.answer"] == "Paris, France"
    assert json.loads(rows[0]["gold.answer"]) == ["Paris", "paris, france"]
    assert rows[0]["score"] == "1.0" and rows[0]["error"] == ""
    assert rows[2]["output.answer"] == "" and rows[2]["error"].startswith("ValueError: no capital")

    result.save(tmp_path / "rows.json")
    data = json.loads((tmp_path / "rows.json").read_text())
    assert data["metric"] == "exact_match" and data["n"] == 3 and data["failures"] == 1
    assert data["rows"][1] == {
        "index": 1,
        "inputs": {"question": "Capital of [bold]Spain[/bold]?"},
        "outputs": {"answer": "Barcelona"},
        "gold": {"answer": "Madrid"},
        "score": 0.0,
        "error": None,
    }
    assert data["rows"][2]["outputs"] is None
    with pytest.raises(lf.UsageError, match=r"'rows\.txt'.*use a \.csv or \.json file name"):
        result.save(tmp_path / "rows.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "rows.json"]
