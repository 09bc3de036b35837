"""Lights on the command line: ``lmforge compile`` fits thresholds on the dev split and
stores them in the artifact; ``lmforge eval`` reports precision and coverage per light and
writes a report with a reliability diagram."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lmforge as lf
import lmforge.cli.compile as compile_cli
import lmforge.cli.eval as eval_cli
import pytest
from lmforge.cli.app import app
from lmforge.optimizers.report import external_urls
from optimizer_fakes import Router, tickets
from typer.testing import CliRunner

# Answers to tickets saying "maybe" are unsure (and, in the data below, labeled wrongly).
PROGRAM = """
import lmforge as lf


class Sure(lf.Module):
    def __init__(self):
        self.predict = lf.Predict("ticket -> team")

    def forward(self, ticket):
        prediction = self.predict(ticket=ticket)
        prediction.confidence = 0.3 if "maybe" in ticket else 0.9
        return prediction


program = Sure()
plain = lf.Predict("ticket -> team")
"""

SURE = ["refund twice", "crash on start", "need a demo", "login again", "price for 40"]
UNSURE = [
    f"maybe {word} {i}" for i, word in enumerate(["refund", "crash", "demo", "login", "price"])
]


def labeled(texts: list[str], *, wrong: bool = False) -> list[dict[str, Any]]:
    rows = [dict(example) for example in tickets(*texts)]
    if wrong:  # gold labels the model never gives: these answers score 0
        rows = [{**row, "team": "nobody"} for row in rows]
    return rows


def write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path.name


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "lights_prog.py").write_text(PROGRAM)
    write(tmp_path / "train.jsonl", labeled(["refund please", "app crash", "price list"]))
    split = labeled(SURE) + labeled(UNSURE, wrong=True)
    write(tmp_path / "dev.jsonl", split)
    write(tmp_path / "test.jsonl", split[:4] + split[6:])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        compile_cli, "make_lm", lambda model: Router(needs_demos=True).lm(model=model)
    )
    real_load = eval_cli.load_program

    def load_with_fake(path: Path, model: str | None = None, trust: Any = None) -> lf.Module:
        program = real_load(path, model=None, trust=trust)
        program.set_lm(Router(needs_demos=True).lm())
        return program

    monkeypatch.setattr(eval_cli, "load_program", load_with_fake)
    yield tmp_path
    sys.modules.pop("lights_prog", None)


def compile_program(target: str, *extra: str) -> Any:
    return CliRunner().invoke(
        app,
        [
            "compile",
            f"lights_prog.py:{target}",
            *("--train", "train.jsonl", "--dev", "dev.jsonl", "--test", "test.jsonl"),
            *("--metric", "exact_match", "--optimizer", "labeled", "-o", "k=3"),
            *("--model", "m/x", "--out", "out", "--no-progress", "--no-baseline", *extra),
        ],
    )


def test_compile_fits_thresholds_on_dev_and_reports_them_on_test(workdir: Path) -> None:
    result = compile_program("program")
    assert result.exit_code == 0, result.output
    lights = json.loads((workdir / "out" / "program@m_x.json").read_text())["meta"]["lights"]
    assert (lights["green"], lights["red"], lights["target"]) == (0.9, 0.9, 0.9)
    assert lights["dev"]["green"] == {"n": 5, "coverage": 0.5, "precision": 1.0}
    assert lights["dev"]["red"] == {"n": 5, "coverage": 0.5, "precision": 0.0}
    # the test split was not used to calibrate: its figures are reported beside dev's
    assert lights["test"]["green"] == {"n": 4, "coverage": 0.5, "precision": 1.0}
    assert [b["n"] for b in lights["reliability"]["dev"]] == [5, 5]
    assert "green >= 0.90" in result.stdout and "test green precision 100.0%" in result.stdout
    report = json.loads((workdir / "out" / "report.json").read_text())
    assert report["runs"][0]["lights"]["test"]["red"]["precision"] == 0.0
    html = (workdir / "out" / "report.html").read_text()
    assert 'id="lights-test"' in html and 'class="reliability"' in html
    assert external_urls(html) == []


def test_compile_pools_the_training_rows_the_program_does_not_show(workdir: Path) -> None:
    result = compile_program("program", "-o", "k=1")  # 1 demo: 2 of 3 training rows unseen
    assert result.exit_code == 0, result.output
    artifact = json.loads((workdir / "out" / "program@m_x.json").read_text())
    lights = artifact["meta"]["lights"]
    shown = {demo["ticket"] for demo in artifact["predictors"]["predict"]["demos"]}
    assert len(shown) == 1
    assert lights["split"] == "dev + unseen train" and lights["n"] == 10 + 2
    assert sum(row["n"] for row in lights["unseen train"].values()) == 2
    assert set(lights["reliability"]) == {"dev", "unseen train", "test"}
    assert "unseen train green precision" in result.stdout
    html = (workdir / "out" / "report.html").read_text()
    assert 'id="lights-unseen-train"' in html


def test_compile_without_confidences_stores_no_lights(workdir: Path) -> None:
    result = compile_program("plain")
    assert result.exit_code == 0, result.output
    meta = json.loads((workdir / "out" / "plain@m_x.json").read_text())["meta"]
    assert "lights" not in meta
    assert "lights" not in result.stdout
    # a few dev examples showed there is no confidence: the split was not scored again
    usage = json.loads((workdir / "out" / "report.json").read_text())["runs"][0]["usage"]
    assert usage["lights_lm_calls"] == 3


def test_a_lights_target_outside_0_to_1_is_a_one_line_error(workdir: Path) -> None:
    result = compile_program("program", "--lights-target", "1.5")
    assert result.exit_code == 2
    assert "--lights-target must be from 0 to 1" in result.output


def test_eval_reports_precision_and_coverage_per_light(workdir: Path) -> None:
    assert compile_program("program").exit_code == 0
    artifact = "out/program@m_x.json"
    args = ["eval", artifact, "--data", "test.jsonl", "--metric", "exact_match", "--no-progress"]
    shown = CliRunner().invoke(app, [*args, "--trust", "lights_prog", "--report", "evalrep"])
    assert shown.exit_code == 0, shown.output
    assert "green" in shown.stdout and "100.0%" in shown.stdout and "50.0%" in shown.stdout
    data = json.loads(CliRunner().invoke(app, [*args, "--trust", "lights_prog", "--json"]).stdout)
    assert data["lights"]["eval"]["green"] == {"n": 4, "coverage": 0.5, "precision": 1.0}
    assert data["lights"]["eval"]["red"]["precision"] == 0.0
    assert data["lights"]["dev"]["green"]["n"] == 5  # the calibration's figures come along
    report = json.loads((workdir / "evalrep" / "report.json").read_text())
    assert report["kind"] == "eval" and report["lights"]["eval"]["yellow"]["n"] == 0
    assert [b["accuracy"] for b in report["lights"]["reliability"]["eval"]] == [0.0, 1.0]
    html = (workdir / "evalrep" / "report.html").read_text()
    assert 'id="lights-eval"' in html and "reliability diagram (eval)" in html
    assert "Score per trial" not in html
