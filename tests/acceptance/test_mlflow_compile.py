"""Compile runs logged to real MLflow (SQLite store in a temp folder): ``compile(...,
mlflow_run=...)`` and ``lmforge compile --mlflow``: parameters, the call estimate, each
trial's score as a step metric, the final scores, the report, the artifact and its
registered model version, and never the LM's key."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.metrics import exact_match
from lmforge.optimizers import RandomSearch
from lmforge.testing import FunctionLM
from typer.testing import CliRunner

pytestmark = pytest.mark.mlflow
mlflow = pytest.importorskip("mlflow")

CANARY = "sk-canary-0d9e8f7a6b5c4d3e"
TEAMS = {"refund": "billing", "invoice": "billing", "crash": "technical", "login": "technical"}


def reply(request: lf.LMRequest) -> str:
    ticket = request.as_text().rsplit("[[ ## ticket ## ]]", 1)[-1]
    team = next((t for word, t in TEAMS.items() if word in ticket), "sales")
    return f"[[ ## team ## ]]\n{team}\n\n[[ ## completed ## ]]"


def router() -> FunctionLM:
    # The key is held by the LM object only: no artifact, parameter or model may carry it.
    return FunctionLM(reply, model="openai/router", api_key=CANARY)


def examples(*tickets: str) -> list[lf.Example]:
    rows = [lf.Example(ticket=t, team=next(v for k, v in TEAMS.items() if k in t)) for t in tickets]
    return [row.with_inputs("ticket") for row in rows]


TRAIN = examples("refund please", "app crash", "invoice copy", "login broken")
DEV = examples("refund twice", "crash on start", "login again")


def assert_no_canary(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"key written to {path}"


@pytest.fixture(autouse=True)
def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's defaults (the registry of ``models:/`` URIs, ./mlruns) point into tmp_path."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)


def test_compile_logs_params_trials_scores_and_registers_the_model(tmp_path: Path) -> None:
    from lmforge.integrations.mlflow import MlflowRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = MlflowRun(
        tracking_uri=uri,
        experiment="triage",
        artifact_location=(tmp_path / "files").as_uri(),
        registered_model_name="triage",
    )
    optimizer = RandomSearch(num_candidates=2, max_bootstrapped_demos=1, max_labeled_demos=2)
    compiled = optimizer.compile(
        lf.Predict("ticket -> team"),
        TRAIN,
        metric=exact_match,
        valset=DEV,
        lm=router(),
        progress=False,
        mlflow_run=settings,
    )

    meta = compiled.artifact_meta  # type: ignore[attr-defined]
    client = mlflow.MlflowClient(uri)
    run = client.get_run(compiled.compile_info["mlflow_run_id"])  # type: ignore[attr-defined]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer"] == "random" and params["config.num_candidates"] == "2"
    assert params["target_model"] == "openai/router" and params["seed"] == "0"
    assert params["train_n"] == "4" and params["dev_n"] == "3"
    assert params["lmforge_version"] == lf.__version__
    metrics = run.data.metrics
    assert metrics["estimated_lm_calls"] == meta["estimated_lm_calls"]
    assert metrics["dev_score"] == pytest.approx(meta["scores"]["dev"])
    history = client.get_metric_history(run.info.run_id, "trial_score")
    assert len(meta["trials"]) >= 2
    assert [(m.step, m.value) for m in history] == [
        (t["number"], pytest.approx(t["score"])) for t in meta["trials"]
    ]
    (version,) = client.search_model_versions("name='triage'")
    assert version.run_id == run.info.run_id
    model = mlflow.pyfunc.load_model("models:/triage/1")
    assert model.metadata.get_input_schema().input_names() == ["ticket"]
    assert_no_canary(tmp_path)


def test_a_compile_that_raises_marks_its_run_failed(tmp_path: Path) -> None:
    from lmforge.errors import UsageError
    from lmforge.integrations.mlflow import MlflowRun

    def broken(example: Any, prediction: Any, trace: Any = None) -> float:
        raise ValueError("metric bug")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(UsageError, match="metric 'broken' raised"):
        RandomSearch(num_candidates=1).compile(
            lf.Predict("ticket -> team"),
            TRAIN,
            metric=broken,
            valset=DEV,
            lm=router(),
            progress=False,
            mlflow_run=MlflowRun(tracking_uri=uri, artifact_location=(tmp_path / "f").as_uri()),
        )
    (run,) = mlflow.MlflowClient(uri).search_runs(["0", "1"])
    assert run.info.status == "FAILED"


PROGRAM = """
import lmforge as lf

program = lf.Predict("ticket -> team")
"""


def write_jsonl(path: Path, rows: list[lf.Example]) -> str:
    path.write_text("".join(json.dumps(row.to_dict()) + "\n" for row in rows))
    return path.name


def test_cli_compile_mlflow_logs_to_a_store_in_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmforge.cli.compile as compile_cli
    from lmforge.cli.app import app

    monkeypatch.setattr(compile_cli, "make_lm", lambda model: router())
    (tmp_path / "prog.py").write_text(PROGRAM)
    args = ["compile", "prog.py:program", "--metric", "exact_match", "--optimizer", "random"]
    args += ["--train", write_jsonl(tmp_path / "train.jsonl", TRAIN)]
    args += ["--dev", write_jsonl(tmp_path / "dev.jsonl", DEV)]
    args += ["--test", write_jsonl(tmp_path / "test.jsonl", DEV[:2])]
    args += ["-o", "num_candidates=2", "--model", "openai/router", "--out", "out"]
    # a bare --mlflow (its URI left out) followed by another option
    args += ["--mlflow", "--mlflow-register", "triage", "--no-progress"]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    db = (tmp_path / "out" / "mlflow.db").resolve()
    assert f"mlflow: sqlite:///{db}" in re.sub(r"\s*\n\s*", "", result.stdout)
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("program").experiment_id])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    scores = report["runs"][0]["scores"]
    assert run.data.metrics["test_score"] == pytest.approx(scores["test"])
    assert run.data.metrics["dev_score"] == pytest.approx(scores["dev"])
    assert run.data.metrics["baseline_score"] == pytest.approx(scores["baseline"])
    assert len(client.get_metric_history(run.info.run_id, "trial_score")) >= 2
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.json", "report.html", "program@openai_router.json"} <= files
    (version,) = client.search_model_versions("name='triage'")
    assert version.run_id == run.info.run_id
    assert (tmp_path / "out" / "mlartifacts").is_dir()  # run files stay in --out
    assert_no_canary(tmp_path / "out")


def test_cli_mlflow_takes_a_uri_only_when_one_follows() -> None:
    from lmforge.cli.compile_mlflow import IN_OUT, optional_mlflow_uri

    assert optional_mlflow_uri(["--mlflow", "sqlite:///x.db", "--out", "o"]) == [
        "--mlflow",
        "sqlite:///x.db",
        "--out",
        "o",
    ]
    assert optional_mlflow_uri(["--out", "o", "--mlflow"]) == ["--out", "o", f"--mlflow={IN_OUT}"]
    assert optional_mlflow_uri(["--mlflow", "--seed", "1"])[0] == f"--mlflow={IN_OUT}"
    assert optional_mlflow_uri(["--", "--mlflow"]) == ["--", "--mlflow"]
