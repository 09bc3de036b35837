"""Compiled programs as MLflow pyfunc models, with real MLflow on a SQLite store in a temp
folder and a fake OpenAI-compatible server on loopback as the LM: logging and registering,
loading and predicting typed rows, load-time overrides, no key in the store, and
``lmforge export --target mlflow`` served by ``mlflow models serve``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.errors import UsageError

from ._fake_openai import fake_openai

pytestmark = pytest.mark.mlflow
mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")

CANARY = "sk-canary-5b1f0c9e7d2a4e68"
SERVE = ["--env-manager", "local", "--host", "127.0.0.1", "--workers", "1"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite tracking store (run files under it, via the working directory) and a
    provider key in the environment that must never reach the store."""
    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK", raising=False)  # the fake LM is on loopback
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("TRIAGE_KEY", CANARY)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    return tmp_path


def triage_artifact(path: Path) -> Path:
    program = lf.Predict(
        "ticket -> team, priority: int", lm=lf.LM("openai/fake-model", cache=False)
    )
    program.demos = [lf.Example(ticket="refund my order", team="billing", priority=1)]
    program.save(path)
    return path


def assert_no_canary(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"key written to {path}"


def test_logged_model_predicts_typed_rows_and_holds_no_key(store: Path) -> None:
    from lmforge.integrations.mlflow import log_model

    artifact = triage_artifact(store / "triage@fake.json")
    info = log_model(artifact, "triage", registered_model_name="triage")

    assert info.registered_model_version == 1
    assert info.signature.inputs.to_dict() == [
        {"type": "string", "name": "ticket", "required": True}
    ]
    assert {c["name"]: c["type"] for c in info.signature.outputs.to_dict()} == {
        "team": "string",
        "priority": "long",
    }
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(store / "dl")))
    example = json.loads((local / "input_example.json").read_text())
    assert example == {"columns": ["ticket"], "data": [["refund my order"]]}  # a real demo
    requirements = (local / "requirements.txt").read_text().split()
    assert f"lmforge=={lf.__version__}" in requirements

    with fake_openai() as (base_url, seen):
        model = mlflow.pyfunc.load_model(
            "models:/triage/1", model_config={"api_base": base_url, "api_key_env": "TRIAGE_KEY"}
        )
        frame = pd.DataFrame({"ticket": ["refund twice please", "the app crashes"]})
        out = model.predict(frame)
    assert list(out.columns) == ["team", "priority"]
    assert out.to_dict(orient="records") == [
        {"team": "billing", "priority": 2},
        {"team": "technical", "priority": 2},
    ]
    assert str(out["priority"].dtype) == "int64"
    assert [r["auth"] for r in seen] == [f"Bearer {CANARY}"] * 2  # the key came from the env
    assert [r["model"] for r in seen] == ["fake-model"] * 2  # the artifact's model
    assert_no_canary(store)


def test_model_and_endpoint_come_from_the_environment_and_keys_are_refused(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge.integrations.mlflow import save_model

    folder = save_model(triage_artifact(store / "triage@fake.json"), store / "model")
    with fake_openai() as (base_url, seen):
        monkeypatch.setenv("LMFORGE_PROVIDER_MODEL", "openai/other-model")
        monkeypatch.setenv("LMFORGE_PROVIDER_API_BASE", base_url)
        out = mlflow.pyfunc.load_model(str(folder)).predict(
            [{"ticket": "refund"}, {"ticket": "bug"}]
        )
    assert out["team"].tolist() == ["billing", "technical"]
    assert [r["model"] for r in seen] == ["other-model"] * 2
    # MLflow drops keys the saved config lacks (with a warning); the loader refuses them too
    from lmforge.integrations.mlflow_pyfunc import _load_pyfunc

    with pytest.raises(UsageError, match="api_key_env"):
        _load_pyfunc(str(folder / "data" / "lmforge"), {"api_key": CANARY})
    assert_no_canary(store)


def test_predict_refuses_rows_without_an_input(store: Path) -> None:
    from lmforge.integrations.mlflow_pyfunc import ProgramModel

    model = ProgramModel(lf.load(triage_artifact(store / "t.json")))
    with pytest.raises(UsageError, match="row 0 has no 'ticket'"):
        model.predict(pd.DataFrame({"text": ["x"]}))
    assert model.predict(pd.DataFrame({"ticket": []})).columns.tolist() == ["team", "priority"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _uvicorn_path(folder: Path) -> str:
    """$PATH with a ``uvicorn`` that runs under this interpreter first: ``mlflow models
    serve`` starts uvicorn by name, and it must see the same packages (lmforge, mlflow)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = bin_dir / "uvicorn"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    script.chmod(0o755)
    return os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])


@pytest.mark.slow
def test_exported_model_is_served_by_mlflow_models_serve(store: Path) -> None:
    import httpx

    pytest.importorskip("uvicorn")

    artifact = triage_artifact(store / "triage@fake.json")
    export_args = ["--target", "mlflow", "--out", str(store / "bundle")]
    export = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", "export", str(artifact), *export_args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr
    assert "mlflow models serve -m" in export.stdout
    bundle = store / "bundle"
    assert {"MLmodel", "manifest.json", "README.md", "data"} <= {p.name for p in bundle.iterdir()}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"] == "mlflow" and "MLmodel" in manifest["files"]

    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    with fake_openai() as (base_url, seen):
        env = {**os.environ, "LMFORGE_PROVIDER_API_BASE": base_url, "PATH": _uvicorn_path(store)}
        server = subprocess.Popen(
            [str(mlflow_cli), "models", "serve", "-m", str(bundle), *SERVE, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 240
            while True:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(1)
            reply = httpx.post(
                f"http://127.0.0.1:{port}/invocations",
                json={"dataframe_records": [{"ticket": "refund please"}, {"ticket": "crash"}]},
                timeout=60,
            )
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "predictions": [
            {"team": "billing", "priority": 2},
            {"team": "technical", "priority": 2},
        ]
    }
    assert [r["auth"] for r in seen] == [f"Bearer {CANARY}"] * 2
    assert_no_canary(store)


def test_predict_takes_arrays_and_numpy_scalars_as_spark_hands_them(store: Path) -> None:
    import numpy as np
    from lmforge.integrations.mlflow_pyfunc import ProgramModel
    from lmforge.testing import FunctionLM

    lm = FunctionLM(lambda request: "[[ ## total ## ]]\n3\n\n[[ ## completed ## ]]")
    model = ProgramModel(lf.Predict("tags: list[str], n: int -> total: int", lm=lm))
    frame = pd.DataFrame({"tags": [np.array(["a", "b"])], "n": np.array([1], dtype="int64")})
    out = model.predict(frame)
    assert out.to_dict(orient="records") == [{"total": 3}]
    prompt = lm.calls[0].as_text()
    assert '["a", "b"]' in prompt and "array(" not in prompt
