"""``lmforge compile`` and ``lmforge eval`` in-process with a fake model: per-model artifacts,
the report, resuming from the run directory, and one-line errors (exit 2) for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lmforge as lf
import lmforge.cli.compile as compile_cli
import lmforge.cli.eval as eval_cli
import pytest
from lmforge.cli.app import app
from lmforge.cli.loading import program_inputs
from lmforge.modules import Chain, ReAct, Retrieve
from optimizer_fakes import TRAIN, VAL, Router
from typer.testing import CliRunner

PROGRAM = """
import lmforge as lf

program = lf.Predict("ticket -> team")


def metric(example, prediction, trace=None):
    return prediction.team == example.team


def build_boom():
    raise ValueError("bad config")


class NeedsArgs:
    def __init__(self, field):
        self.field = field
"""


def write_jsonl(path: Path, examples: list[lf.Example]) -> Path:
    path.write_text("".join(json.dumps(ex.to_dict()) + "\n" for ex in examples))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "prog.py").write_text(PROGRAM)
    write_jsonl(tmp_path / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "dev.jsonl", VAL)
    write_jsonl(tmp_path / "test.jsonl", VAL[:3])
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def routers(monkeypatch: pytest.MonkeyPatch) -> list[Router]:
    """Every --model gets a fresh fake router (recorded, to count calls)."""
    made: list[Router] = []

    def make_lm(model: str) -> lf.LM:
        router = Router(needs_demos=True)
        made.append(router)
        return router.lm(model=model)

    monkeypatch.setattr(compile_cli, "make_lm", make_lm)
    return made


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def compile_args(*extra: str) -> list[str]:
    return [
        "compile",
        "prog.py:program",
        "--train",
        "train.jsonl",
        "--dev",
        "dev.jsonl",
        "--test",
        "test.jsonl",
        "--metric",
        "exact_match",
        "--out",
        "out",
        "--no-progress",
        *extra,
    ]


def test_compile_writes_one_artifact_per_model_and_a_report(
    workdir: Path, routers: list[Router]
) -> None:
    result = invoke(
        *compile_args(
            "--optimizer",
            "random",
            "-o",
            "num_candidates=2",
            "-o",
            "max_labeled_demos=2",
            "--model",
            "vendor/model-a",
            "--model",
            "local/b:q4",
        )
    )
    assert result.exit_code == 0, result.output
    assert "at most ~" in result.stderr
    first = workdir / "out" / "program@vendor_model-a.json"
    second = workdir / "out" / "program@local_b_q4.json"
    assert first.exists() and second.exists()
    meta = json.loads(first.read_text())["meta"]
    assert meta["target_model"] == "vendor/model-a"
    assert set(meta["scores"]) == {"dev", "test"} and meta["scores"]["test"] == 1.0
    assert json.loads(first.read_text())["predictors"]["self"]["lm"]["model"] == "vendor/model-a"
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert [run["model"] for run in report["runs"]] == ["vendor/model-a", "local/b:q4"]
    run = report["runs"][0]
    assert run["scores"]["baseline"] < run["scores"]["test"]
    assert len(run["candidates"]) == 5 and sum(c["best"] for c in run["candidates"]) == 1
    assert "Ticket: {ticket}" in run["prompts"]["self"]["prompt"]
    assert "program@vendor_model-a.json" in result.stdout


def test_rerunning_the_command_resumes_from_the_run_directory(
    workdir: Path, routers: list[Router]
) -> None:
    args = compile_args(
        "--optimizer", "bootstrap", "-o", "max_labeled_demos=2", "--model", "m/x", "--no-baseline"
    )
    assert invoke(*args).exit_code == 0
    before = (workdir / "out" / "program@m_x.json").read_bytes()
    assert invoke(*args).exit_code == 0
    # bootstrapping, dev scoring and the test split's scoring were all restored
    assert routers[1].requests == []
    assert (workdir / "out" / "program@m_x.json").read_bytes() == before
    assert len(list((workdir / "out" / ".runs").iterdir())) == 1


def test_a_resumed_compile_does_not_score_the_test_split_or_baseline_again(
    workdir: Path, routers: list[Router]
) -> None:
    """The test and baseline evaluations after the search used to run again on every
    resume; like the search's steps, they are checkpointed in the run directory."""
    args = compile_args("--optimizer", "labeled", "-o", "k=2", "--model", "m/x")
    # as if killed during the baseline: the compile and the test split are finished
    assert invoke(*args, "--no-baseline").exit_code == 0
    first = json.loads((workdir / "out" / "report.json").read_text())["runs"][0]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    # only the baseline's 3 test examples are new: nothing of the test split is redone
    assert len(routers[1].requests) == 3
    assert all(r.as_text().count("Ticket:") == 1 for r in routers[1].requests)  # zero-shot
    assert invoke(*args).exit_code == 0
    assert routers[2].requests == []
    runs = json.loads((workdir / "out" / "report.json").read_text())["runs"]
    assert runs[0]["scores"]["test"] == first["scores"]["test"] == 1.0
    assert runs[0]["usage"]["test_lm_calls"] == first["usage"]["test_lm_calls"] == 3
    assert runs[0]["scores"]["baseline"] < 1.0


def test_rerunning_after_editing_the_metric_starts_a_fresh_run(
    workdir: Path, routers: list[Router]
) -> None:
    """Fixing a bug in a custom metric and rerunning used to resume the old run directory and
    report the buggy metric's scores (0% dev) for a program that now scores 100%."""
    (workdir / "metric.py").write_text(
        "def metric(example, prediction, trace=None):\n"
        "    return prediction.team.upper() == example.team\n"
    )
    args = [*compile_args("--optimizer", "labeled", "--model", "m/x", "--no-baseline")]
    args[args.index("exact_match")] = "metric.py:metric"
    assert invoke(*args).exit_code == 0
    scores = json.loads((workdir / "out" / "report.json").read_text())["runs"][0]["scores"]
    assert scores["dev"] == 0.0
    (workdir / "metric.py").write_text(
        "def metric(example, prediction, trace=None):\n    return prediction.team == example.team\n"
    )
    import sys

    sys.modules.pop("metric", None)  # in-process runs: let the edited file be imported again
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    scores = json.loads((workdir / "out" / "report.json").read_text())["runs"][0]["scores"]
    assert scores["dev"] == 1.0
    assert len(list((workdir / "out" / ".runs").iterdir())) == 2


def test_eval_prints_the_score_table(
    workdir: Path, routers: list[Router], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        invoke(*compile_args("--optimizer", "labeled", "-o", "k=3", "--model", "m/x")).exit_code
        == 0
    )
    real_load = eval_cli.load_program

    def load_with_fake(
        path: Path, model: str | None = None, trust: list[str] | None = None
    ) -> lf.Module:
        program = real_load(path, model=None, trust=trust)
        program.set_lm(Router(needs_demos=True).lm())
        return program

    monkeypatch.setattr(eval_cli, "load_program", load_with_fake)
    result = invoke(
        "eval",
        "out/program@m_x.json",
        "--data",
        "dev.jsonl",
        "--metric",
        "prog.py:metric",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "100.0%" in result.stdout and "metric" in result.stdout
    as_json = invoke(
        "eval", "out/program@m_x.json", "--data", "dev.jsonl", "--metric", "exact_match", "--json"
    )
    data = json.loads(as_json.stdout)
    assert data["score"] == 1.0 and len(data["rows"]) == len(VAL)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train_line": "{not json"}, "train.jsonl line 9: not valid JSON"),
        (
            {"train_line": '{"ticket": "no label"}'},
            "train.jsonl line 9: missing label field(s) 'team'",
        ),
        ({"metric": "nowhere_module:metric"}, "cannot import nowhere_module"),
        ({"metric": "prog.py:no_such_metric"}, "has no attribute 'no_such_metric'"),
        ({"metric": "accuracy"}, "unknown metric 'accuracy'"),
        ({"optimizer": "genetic"}, "unknown optimizer 'genetic'"),
        ({"program": "prog.py:nothing"}, "has no attribute 'nothing'"),
        (
            {"program": "prog.py:build_boom"},
            "calling it with no arguments failed (ValueError: bad config)",
        ),
        (
            {"metric": "prog.py:NeedsArgs"},
            "calling it with no arguments failed (TypeError: ",
        ),
        ({"option": "oops"}, "must look like name=value"),
        ({"option": "k=abc"}, "option k expects an int, got 'abc' (str); e.g. -o k=4"),
        (
            {"optimizer": "mipro", "option": "num_trials=abc"},
            "option num_trials expects an int (or null), got 'abc'",
        ),
    ],
)
def test_bad_inputs_are_one_line_errors(
    workdir: Path, routers: list[Router], change: dict[str, str], expected: str
) -> None:
    if "train_line" in change:
        with (workdir / "train.jsonl").open("a") as handle:
            handle.write(change["train_line"] + "\n")
    args = [
        "compile",
        change.get("program", "prog.py:program"),
        "--train",
        "train.jsonl",
        "--dev",
        "dev.jsonl",
        "--metric",
        change.get("metric", "exact_match"),
        "--optimizer",
        change.get("optimizer", "labeled"),
        "--model",
        "m/x",
        "--out",
        "out",
        "--no-progress",
    ]
    if "option" in change:
        args += ["-o", change["option"]]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert expected in lines[0]
    assert not routers or not routers[0].requests


def test_labels_must_match_a_program_output_for_builtin_metrics(
    workdir: Path, routers: list[Router]
) -> None:
    write_jsonl(
        workdir / "train.jsonl", [ex.copy(department=ex.team).without("team") for ex in TRAIN]
    )
    result = invoke(
        "compile",
        "prog.py:program",
        "--train",
        "train.jsonl",
        "--metric",
        "exact_match",
        "--model",
        "m/x",
        "--out",
        "out",
    )
    assert result.exit_code == 2
    assert "match no output field of the program" in result.stderr


class _Shelf:
    def search(self, query: str, k: int) -> list[Any]:
        return []


class _RetrieveFirst(lf.Module):
    def __init__(self) -> None:
        self.retrieve = Retrieve(_Shelf(), k=1, query="question")
        self.answer = lf.Predict("question, passages -> answer")

    def forward(self, question: str) -> lf.Prediction:
        passages = self.retrieve(question=question).passages
        return self.answer(question=question, passages=passages)


class _Untyped(lf.Module):
    def __init__(self) -> None:
        self.step = lf.Predict("ticket -> team")

    def forward(self, **inputs: Any) -> lf.Prediction:
        return self.step(**inputs)


def test_program_inputs_are_the_programs_own_inputs_not_its_first_predictors() -> None:
    chain = Chain("ticket -> summary", "summary, channel -> team", inputs=["channel"])
    assert program_inputs(chain) == ["ticket", "channel"]
    assert program_inputs(_RetrieveFirst()) == ["question"]  # not question, passages
    assert program_inputs(ReAct("question -> answer", tools=[])) == ["question"]
    assert program_inputs(_Untyped()) == ["ticket"]  # no signature, **inputs: first predictor


CHAIN_PROGRAM = """
import lmforge as lf
from lmforge.modules import Chain

program = Chain("ticket -> summary", "summary, channel -> team", inputs=["channel"])
"""


def test_compile_marks_every_chain_input(workdir: Path, routers: list[Router]) -> None:
    (workdir / "chain.py").write_text(CHAIN_PROGRAM)
    write_jsonl(workdir / "train.jsonl", [ex.copy(channel="mail") for ex in TRAIN])
    result = invoke(
        "compile",
        "chain.py:program",
        "--train",
        "train.jsonl",
        "--metric",
        "exact_match",
        "--optimizer",
        "labeled",
        "--model",
        "m/x",
        "--out",
        "out",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["command"]["inputs"] == ["ticket", "channel"]


LMS = r"""
from lmforge.testing import FunctionLM

fake = FunctionLM(lambda request: "[[ ## team ## ]]\nbilling\n\n[[ ## completed ## ]]")
"""


def test_eval_with_a_model_file_prints_no_default_model_notice(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.lm import lm as lm_module

    lf.Predict("ticket -> team").save(workdir / "plain.json")  # saved without a model
    (workdir / "lms.py").write_text(LMS)
    monkeypatch.delenv("LMFORGE_MODEL", raising=False)
    lm_module._announce.cache_clear()  # the notice is printed once per process
    result = invoke(
        "eval",
        "plain.json",
        "--model",
        "lms.py:fake",
        "--data",
        "dev.jsonl",
        "--metric",
        "exact_match",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "no model configured" not in result.stderr


def test_eval_with_a_model_factory_that_fails_is_a_one_line_error(workdir: Path) -> None:
    """A ``--model file.py:factory`` that raises used to print a Python traceback."""
    lf.Predict("ticket -> team").save(workdir / "plain.json")
    (workdir / "lms.py").write_text(
        "def needs_args(endpoint):\n    pass\n\n"
        "def no_endpoint():\n    raise RuntimeError('set MY_ENDPOINT')\n"
    )
    for factory, expected in [
        ("needs_args", "TypeError: needs_args() missing 1 required positional argument"),
        ("no_endpoint", "RuntimeError: set MY_ENDPOINT"),
    ]:
        result = invoke(
            "eval", "plain.json", "--model", f"lms.py:{factory}", "--data", "dev.jsonl",
            "--metric", "exact_match", "--no-progress",
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: model 'lms.py:"), lines
        assert expected in lines[0]


def test_storage_option_reaches_the_search_optimizer(workdir: Path, routers: list[Router]) -> None:
    result = invoke(
        *compile_args("--optimizer", "mipro", "--storage", "nosuchdb://x/y", "--model", "m")
    )
    assert result.exit_code != 0
    assert "cannot open optuna storage 'nosuchdb://x/y'" in result.output
    refused = invoke(
        *compile_args("--optimizer", "bootstrap", "--storage", "nosuchdb://x/y", "--model", "m")
    )
    assert refused.exit_code != 0 and "storage" in refused.output, refused.output
