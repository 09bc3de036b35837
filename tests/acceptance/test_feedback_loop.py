"""Ground truth from production, end to end: a served bundle with its request log,
100 answers over real HTTP, 30 feedback corrections, ``lmforge feedback export`` and
``lmforge recompile`` whose new artifact trains on the corrections and names its parent."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
import lmforge.cli.compile
import lmforge.cli.deploy
import lmforge.cli.feedback  # registers the commands
import yaml
from lmforge.artifact import read_artifact
from lmforge.cli.app import app
from lmforge.data import dataset_hash, load_jsonl
from lmforge.targets import create_app, load_bundle
from lmforge.targets.config import ServerConfig
from lmforge.targets.request_store import open_store
from lmforge.testing import FunctionLM
from typer.testing import CliRunner

from ._serving import serve

KEY = "feedback-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIG = "ticket: str -> team: Literal['billing', 'tech']"
# Answers "tech" to everything: the 30 billing tickets among the first 100 get corrected.
LMS = """
from lmforge.testing import FunctionLM

fake = FunctionLM(lambda request: "[[ ## team ## ]]\\ntech\\n\\n[[ ## completed ## ]]")
"""


def _always_tech() -> FunctionLM:
    return FunctionLM(lambda request: "[[ ## team ## ]]\ntech\n\n[[ ## completed ## ]]")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    program = lf.Predict(SIG, demos=[{"ticket": "app crashes", "team": "tech"}])
    artifact = tmp_path / "triage.json"
    program.save(artifact)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(artifact),
            "--target",
            "managed",
            "--model",
            "openai/gpt-4o-mini",
            "--out",
            str(out),
            "--request-log",
            "data/requests.db",
            "--feedback-sample",
            "0.25",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "the SQLite request log is per replica" in result.output
    return out


def test_export_records_the_request_log_and_compose_keeps_it_on_a_volume(bundle: Path) -> None:
    serving = json.loads((bundle / "serving.json").read_text())
    assert serving["request_log"] == {
        "url": "data/requests.db",
        "feedback_sample": 0.25,
        "queue_size": 10000,
    }
    compose = yaml.safe_load((bundle / "compose.yaml").read_text())
    assert "request-log:/bundle/data" in compose["services"]["program"]["volumes"]
    assert {"prometheus", "grafana", "program"} <= set(compose["services"])
    assert "request-log" in compose["volumes"]
    assert "mkdir -p /bundle/data" in (bundle / "Dockerfile").read_text()


def test_served_bundle_feedback_export_and_recompile_close_the_loop(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program, config = load_bundle(
        bundle,
        ServerConfig(name="triage", api_keys=(KEY,), rate_limit_burst=500),
        artifact_lms=True,
        default_lm=_always_tech(),
    )
    assert config.request_log is not None
    assert config.request_log.url == str(bundle / "data" / "requests.db")
    app_ = create_app(program, config)
    tickets = [f"refund order {i}" if i % 10 < 3 else f"app bug {i}" for i in range(100)]
    with serve(app_) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        ids = {}
        asked = 0
        for ticket in tickets:
            answer = client.post("/v1/programs/triage", json={"ticket": ticket})
            assert answer.status_code == 200 and answer.json() == {"team": "tech"}
            ids[ticket] = answer.headers["x-request-id"]
            asked += answer.headers.get("x-feedback-requested") == "true"
        # No lights yet (green by default): the sampled share of answers asks for feedback.
        assert 10 <= asked <= 45
        billing = [t for t in tickets if t.startswith("refund")]
        assert len(billing) == 30
        for ticket in billing:
            posted = client.post(
                "/v1/programs/triage/feedback",
                json={"request_id": ids[ticket], "outputs": {"team": "billing"}},
            )
            assert posted.status_code == 200 and posted.json()["status"] == "recorded"
        metrics = client.get("/metrics").text
    app_.state.feedback.close()
    assert 'lmforge_feedback_total{program="triage",result="recorded"} 30.0' in metrics
    assert "lmforge_feedback_score{" in metrics

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lms.py").write_text(LMS)
    runner = CliRunner()
    exported = runner.invoke(app, ["feedback", "export", str(bundle), "--out", "data.jsonl"])
    assert exported.exit_code == 0, exported.output
    assert "wrote 30 rows" in exported.output
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert sorted(rows, key=lambda r: r["ticket"]) == sorted(
        ({"ticket": t, "team": "billing"} for t in billing), key=lambda r: r["ticket"]
    )

    (tmp_path / "base.jsonl").write_text(
        json.dumps({"ticket": "app crashes again", "team": "tech"}) + "\n"
    )
    recompiled = runner.invoke(
        app,
        [
            "recompile",
            str(bundle),
            "--feedback",
            str(bundle / "data" / "requests.db"),
            "--train",
            "base.jsonl",
            "--metric",
            "exact_match",
            "--model",
            "lms.py:fake",
            "--optimizer",
            "labeled",
            "--option",
            "k=100",
            "--out",
            "out",
        ],
    )
    assert recompiled.exit_code == 0, recompiled.output
    artifacts = [p for p in (tmp_path / "out").glob("*.json") if p.name != "report.json"]
    assert len(artifacts) == 1
    document = read_artifact(artifacts[0])
    meta = document["meta"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert meta["parent"]["artifact_sha256"] == manifest["artifact_sha256"]
    assert meta["feedback"]["rows"] == 30 and meta["feedback"]["corrected"] == 30
    train = load_jsonl(tmp_path / "out" / "train.jsonl", inputs=["ticket"])
    assert len(train) == 31 and meta["datasets"]["train"] == {
        "sha256": dataset_hash(train),
        "n": 31,
    }
    demos = document["predictors"]["self"]["demos"]
    corrected = {(d["ticket"], d["team"]) for d in demos}
    assert {(t, "billing") for t in billing} <= corrected


def test_the_log_never_stores_authorization_headers(bundle: Path) -> None:
    canary = "canary-secret-key-7f3a9c1e5b2d4f60"
    program, config = load_bundle(
        bundle,
        ServerConfig(name="triage", api_keys=(KEY, canary)),
        artifact_lms=True,
        default_lm=_always_tech(),
    )
    app_ = create_app(program, config)
    with serve(app_) as url, httpx.Client(base_url=url, timeout=30) as client:
        for key in (KEY, canary):
            answer = client.post(
                "/v1/programs/triage",
                json={"ticket": "hello"},
                headers={"Authorization": f"Bearer {key}", "X-Api-Key": canary},
            )
            assert answer.status_code == 200
    app_.state.feedback.close()
    database = bundle / "data" / "requests.db"
    with sqlite3.connect(database) as connection:
        dump = "\n".join(connection.iterdump())
    assert dump.count("hello") == 2
    stored = b"".join(p.read_bytes() for p in database.parent.iterdir())
    assert canary.encode() not in stored and KEY.encode() not in stored
    assert canary not in dump and KEY not in dump


def test_serve_request_log_moves_the_store_and_keeps_the_bundle_settings(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
    seen: dict[str, uvicorn.Config] = {}
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: seen.update(c=self.config)
    )
    elsewhere = str(tmp_path / "elsewhere.db")
    result = CliRunner().invoke(app, ["serve", str(bundle), "--request-log", elsewhere])
    assert result.exit_code == 0, result.output
    feedback = seen["c"].app.state.feedback  # type: ignore[attr-defined]
    feedback.close()
    assert feedback.settings.url == elsewhere and feedback.settings.feedback_sample == 0.25
    assert Path(elsewhere).is_file()


def test_feedback_commands_refuse_bad_sources_in_one_line(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    plain = tmp_path / "plain"
    program = lf.Predict(SIG)
    program.save(tmp_path / "plain.json")
    open_store(str(tmp_path / "empty.db")).close()
    made = runner.invoke(
        app, ["export", "plain.json", "-t", "managed", "--model", "openai/x", "--out", str(plain)]
    )
    assert made.exit_code == 0, made.output
    cases = [
        (["feedback", "export", str(plain), "--out", "x.jsonl"], "keeps no request log"),
        (["feedback", "export", "missing.db", "--out", "x.jsonl"], "no such request-log"),
        (["feedback", "export", str(bundle), "--out", "x.jsonl"], "first logged answer"),
        (["feedback", "export", "mysql://h/db", "--out", "x.jsonl"], "unknown request-log"),
        (
            ["feedback", "export", str(bundle), "--out", "x.jsonl", "--min-score", "2"],
            "--min-score",
        ),
        (
            ["export", "plain.json", "-t", "managed", "--out", "b2", "--feedback-sample", "0.1"],
            "need --request-log",
        ),
        (
            [
                "recompile",
                str(bundle),
                "--feedback",
                "empty.db",
                "--metric",
                "exact_match",
                "--model",
                "openai/gpt-4o-mini",
                "--out",
                "out",
            ],
            "no usable feedback",
        ),
    ]
    for args, says in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
