"""``lmforge compile --optimizer finetune`` end to end in-process, against the local fake
of OpenAI's fine-tuning API over real HTTP (the tuned ``ft:`` model answers from its
training file): artifact pointing at the ``ft:`` model, training data in the run
directory, and few-shot after fine-tuning as one option."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lmforge.cli.app import app
from typer.testing import CliRunner

pytest.importorskip("openai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "acceptance" / "fixtures"))
from fake_openai_ft import FakeFineTuningAPI

PROGRAM = """
import lmforge as lf

program = lf.Predict("ticket -> team")
"""
TICKETS = [
    ("refund my invoice", "billing"),
    ("the app crashes", "technical"),
    ("price for 40 seats", "sales"),
    ("charged twice", "billing"),
    ("login broken", "technical"),
    ("book a demo", "sales"),
]


@pytest.fixture
def api() -> Iterator[FakeFineTuningAPI]:
    server = FakeFineTuningAPI(polls_to_finish=2).start()
    yield server
    server.stop()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import lmforge.cli.compile  # noqa: F401  (registers the command)

    (tmp_path / "prog.py").write_text(PROGRAM)
    rows = "".join(json.dumps({"ticket": t, "team": team}) + "\n" for t, team in TICKETS)
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "test.jsonl").write_text(rows)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compile(api: FakeFineTuningAPI, *extra: str) -> object:
    options = {"base_url": api.base_url, "api_key": "sk-test", "poll_interval": 0.01}
    args = [
        "compile", "prog.py:program", "--train", "train.jsonl", "--test", "test.jsonl",
        "--dev", "test.jsonl", "--metric", "exact_match", "--optimizer", "finetune",
        "--model", "openai/gpt-4o-mini-2024-07-18", "--out", "out", "--no-progress",
        "--no-baseline", "-o", "teacher=labels", "-o", f"finetuner_options={json.dumps(options)}",
        *extra,
    ]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_compile_with_the_finetune_optimizer(workdir: Path, api: FakeFineTuningAPI) -> None:
    result = _compile(api, "-o", "epochs=2", "-o", "validation_fraction=0")
    assert result.exit_code == 0, result.output
    artifact = workdir / "out" / "program@openai_gpt-4o-mini-2024-07-18.json"
    document = json.loads(artifact.read_text())
    lm = document["predictors"]["self"]["lm"]
    assert lm["model"].startswith("openai/ft:gpt-4o-mini-2024-07-18:fake-org::")
    meta = document["meta"]
    assert meta["target_model"] == lm["model"]
    assert meta["finetune"]["job_id"] in api.jobs and meta["finetune"]["traces"]["passed"] == 6
    assert "api_key" not in json.dumps(document)
    (job,) = api.jobs.values()
    assert job["hyperparameters"]["n_epochs"] == 2
    assert meta["scores"]["test"] == 1.0  # the tuned model learned the training tickets
    data = next((workdir / "out" / ".runs").glob("*/finetune/data"))
    assert len((data / "train.chat.jsonl").read_text().splitlines()) == len(TICKETS)
    # rerunning the same command resumes from the run directory: no second job
    again = _compile(api, "-o", "epochs=2", "-o", "validation_fraction=0")
    assert again.exit_code == 0 and api.created == 1


def test_fewshot_after_finetuning_is_one_option(workdir: Path, api: FakeFineTuningAPI) -> None:
    result = _compile(api, "-o", "fewshot_after=true")
    assert result.exit_code == 0, result.output
    document = json.loads(
        (workdir / "out" / "program@openai_gpt-4o-mini-2024-07-18.json").read_text()
    )
    kinds = [c["kind"] for c in document["meta"]["candidates"]]
    assert kinds == ["finetune", "finetune+fewshot"]
    assert document["meta"]["finetune"]["fewshot_after"] is True


def test_unknown_finetuner_is_a_usage_error(workdir: Path, api: FakeFineTuningAPI) -> None:
    result = _compile(api, "-o", "finetuner=nope")
    assert result.exit_code == 2 and "unknown finetuner 'nope'" in result.output
