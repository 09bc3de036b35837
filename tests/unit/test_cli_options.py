"""Command-line values every command checks the same way (``--model``, counts, budgets,
``--out``), and the exit status of a compile or eval whose LM calls failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import lmforge.cli.compile
import lmforge.cli.eval
import lmforge.cli.run  # each command module registers its commands on the app
import pytest
from lmforge.cli.app import app
from optimizer_fakes import TRAIN, VAL
from typer.testing import CliRunner

LMS = """
import lmforge as lf
from lmforge.testing import FunctionLM

fake = FunctionLM(lambda request: "[[ ## team ## ]]\\nbilling\\n\\n[[ ## completed ## ]]")
garbage = FunctionLM(lambda request: "")  # every (empty) answer fails to parse
# a server that is down: nothing listens on port 1 of the loopback interface
down = lf.LM("hosted_vllm/x", api_base="http://127.0.0.1:1/v1", retry=1, cache=False)
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "prog.py").write_text(
        'import lmforge as lf\n\nprogram = lf.Predict("ticket -> team")\n'
    )
    (tmp_path / "lms.py").write_text(LMS)
    for name, rows in (("train", TRAIN), ("dev", VAL)):
        lines = "".join(json.dumps(ex.to_dict()) + "\n" for ex in rows)
        (tmp_path / f"{name}.jsonl").write_text(lines)
    lf.Predict("ticket -> team").save(tmp_path / "plain.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def compile_args(*extra: str, model: str = "lms.py:fake") -> list[str]:
    return [
        "compile", "prog.py:program", "--train", "train.jsonl", "--dev", "dev.jsonl",
        "--metric", "exact_match", "--optimizer", "bootstrap", "--model", model,
        "--out", "out", "--no-progress", *extra,
    ]  # fmt: skip


def eval_args(*extra: str, model: str = "lms.py:fake") -> list[str]:
    return [
        "eval", "plain.json", "--model", model, "--data", "dev.jsonl",
        "--metric", "exact_match", "--no-progress", *extra,
    ]  # fmt: skip


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], lines  # one error line, last (after compile's call estimate)
    assert "Traceback" not in result.stderr
    return str(errors[0])


# -- failed LM calls ----------------------------------------------------------------------


def test_compile_whose_lm_calls_all_fail_exits_1_and_writes_no_artifact(workdir: Path) -> None:
    """Every call to a server that is down failed, and compile still exited 0 with an
    artifact of labeled demos."""
    line = one_line_error(invoke(*compile_args(model="lms.py:down")), 1)
    assert "hosted_vllm/x: " in line
    assert (
        f"{len(TRAIN) + len(VAL)} of {len(TRAIN) + len(VAL)} examples failed on LM calls (100%)"
        in line
    )
    assert "commonest error" in line and "127.0.0.1:1" in line
    assert "more than --max-failure-rate 0.5; no artifact written" in line
    assert not list(workdir.glob("out/*@*.json"))
    assert not list(workdir.glob("out/.runs/*"))  # a rerun must not restore the failures
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["runs"][0]["artifact"] is None
    assert report["runs"][0]["failures"]["failed"] == len(TRAIN) + len(VAL)


def test_eval_whose_lm_calls_all_fail_exits_1_after_the_table(workdir: Path) -> None:
    result = invoke(*eval_args(model="lms.py:down"))
    line = one_line_error(result, 1)
    assert f"{len(VAL)} of {len(VAL)} examples failed on LM calls (100%)" in line
    assert "127.0.0.1:1" in line and "--max-failure-rate 0.5" in line
    assert "plain.json on dev.jsonl" in result.stdout  # the table is still printed


def test_a_higher_failure_rate_lets_the_eval_pass(workdir: Path) -> None:
    result = invoke(*eval_args("--max-failure-rate", "1", model="lms.py:down"))
    assert result.exit_code == 0, result.output


def test_unparsable_answers_are_the_models_quality_not_failed_calls(workdir: Path) -> None:
    """Only LM-call errors count: a small model whose answers do not parse still gets an
    artifact (compiling is there to improve it) and a score."""
    result = invoke(*compile_args(model="lms.py:garbage"))
    assert result.exit_code == 0, result.output
    assert len(list(workdir.glob("out/program@*.json"))) == 1
    result = invoke(*eval_args(model="lms.py:garbage"))
    assert result.exit_code == 0, result.output
    assert "ParseError" in result.stdout


def test_a_working_model_still_compiles(workdir: Path) -> None:
    result = invoke(*compile_args())
    assert result.exit_code == 0, result.output
    assert len(list(workdir.glob("out/program@*.json"))) == 1


# -- option values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-cost", "nan"], "--max-cost must be a finite number of 0 or more (USD), got nan"),
        (["--max-cost", "inf"], "--max-cost must be a finite number of 0 or more (USD), got inf"),
        (["--max-cost", "-1"], "--max-cost must be a finite number of 0 or more (USD), got -1"),
        (["--max-calls", "-1"], "--max-calls must be 0 or more, got -1"),
        (["--concurrency", "0"], "--concurrency must be 1 or more, got 0"),
        (["--max-failure-rate", "1.5"], "--max-failure-rate must be from 0 to 1"),
        (["--max-failure-rate", "nan"], "--max-failure-rate must be from 0 to 1"),
    ],
)
def test_compile_refuses_values_that_cannot_work(
    workdir: Path, args: list[str], expected: str
) -> None:
    assert expected in one_line_error(invoke(*compile_args(*args)), 2)
    assert not (workdir / "out").exists()


@pytest.mark.parametrize("model", ["", "  "])
def test_an_empty_model_is_refused_not_the_local_model(workdir: Path, model: str) -> None:
    for args in (
        compile_args(model=model),
        eval_args(model=model),
        ["run", "plain.json", "--model", model, "-i", '{"ticket": "refund"}'],
        ["inspect", "plain.json", "--model", model],
    ):
        assert "--model is empty; pass a model name" in one_line_error(invoke(*args), 2)


def test_eval_refuses_a_negative_failure_count(workdir: Path) -> None:
    line = one_line_error(invoke(*eval_args("--failures", "-1")), 2)
    assert "--failures must be 0 or more, got -1" in line


def test_run_accepts_a_model_file_like_eval_and_compile(workdir: Path) -> None:
    result = invoke("run", "plain.json", "--model", "lms.py:fake", "-i", '{"ticket": "refund"}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"team": "billing"}


def test_out_that_is_a_file_is_a_one_line_error(workdir: Path) -> None:
    (workdir / "taken").write_text("")
    line = one_line_error(invoke(*[*compile_args()[:-3], "--out", "taken", "--no-progress"]), 2)
    assert "--out taken is a file, not a directory" in line
    line = one_line_error(invoke(*[*compile_args()[:-3], "--out", "taken/sub", "--no-progress"]), 2)
    assert "--out taken/sub: cannot create the directory (Not a directory)" in line
