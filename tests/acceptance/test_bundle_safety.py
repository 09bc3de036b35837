"""Bundles refuse bad inputs with clear errors: reference data, LoRA paths, serving.json,
the manifest; and the generated files (smoke test, k8s probes, Dockerfile) work as written."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import lmforge as lf
import yaml
from lmforge.errors import ArtifactError, UsageError
from lmforge.targets import create_app, load_bundle
from lmforge.targets.bundle import bundle_limits, verify_bundle, write_bundle
from lmforge.targets.config import ServerConfig
from lmforge.targets.export import ExportOptions, _adapter_files, export_bundle
from lmforge.targets.program import build_models
from lmforge.testing import FunctionLM
from typer.testing import CliRunner

from ._serving import serve

KEY = "safety-key-0123456789abcdef"
SIG = lf.Signature.parse(
    "ticket: str, urgent: bool, note: Optional[str] -> team: Literal['billing', 'tech']"
)
ROWS = [
    {"ticket": "refund please", "urgent": True, "note": None, "team": "billing"},
    {"ticket": "app crashes", "urgent": False, "note": "since monday", "team": "tech"},
]


def _cli() -> Any:
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.app import app

    return app


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    program = lf.Predict(SIG, lm=lf.LM("openai/gpt-4o-mini", cache=False))
    path = tmp_path / "triage@gpt.json"
    program.save(path)
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


def _export(artifact: Path, out: Path, **changes: Any) -> Path:
    options = ExportOptions(target="managed", **changes)
    return export_bundle(artifact, out, options).path


def _rewrite(bundle: Path, relative: str, text: str) -> None:
    """Change a bundle file and its manifest digest (a bundle authored that way)."""
    (bundle / relative).write_text(text)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][relative] = hashlib.sha256(text.encode()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_smoke_test_embeds_bool_and_null_inputs_and_runs(
    artifact: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    bundle = _export(artifact, tmp_path / "bundle", reference_data=tmp_path / "dev.jsonl")
    source = (bundle / "smoke_test.py").read_text()
    ast.parse(source)  # valid Python (JSON's true/null pasted in was a NameError)
    namespace: dict[str, Any] = {"__name__": "smoke_test"}
    exec(compile(source, "smoke_test.py", "exec"), namespace)
    assert namespace["INPUTS"] == {"ticket": "refund please", "urgent": True, "note": None}
    expected = build_models("triage", SIG).response.model_json_schema()
    assert namespace["OUTPUT_SCHEMA"] == json.loads(json.dumps(expected))

    # And it passes against a served program.
    program = lf.Predict(SIG, lm=FunctionLM(lambda r: "[[ ## team ## ]]\nbilling"))
    app = create_app(program, ServerConfig(name="triage", api_keys=(KEY,)))
    with serve(app) as url:
        done = subprocess.run(
            [sys.executable, str(bundle / "smoke_test.py"), url],
            env={**subprocess_env, "LMFORGE_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK:")


def test_reference_data_problems_are_usage_errors(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--reference-data .*missing\.jsonl does not exist"):
        _export(artifact, tmp_path / "a", reference_data=tmp_path / "missing.jsonl")
    for key, value in (("latency_ms", "fast"), ("latency_s", None), ("latency_s", True)):
        rows = [dict(ROWS[0], latency_s=0.5), dict(ROWS[1], **{key: value})]
        data = tmp_path / "latency.jsonl"
        data.write_text("\n".join(json.dumps(r) for r in rows))
        with pytest.raises(UsageError, match=rf"latency\.jsonl line 2: {key} must be a non-neg"):
            _export(artifact, tmp_path / "b", reference_data=data)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    cli = CliRunner().invoke(
        _cli(),
        [
            "export",
            str(artifact),
            "-t",
            "managed",
            "-o",
            str(tmp_path / "c"),
            "--reference-data",
            str(tmp_path / "missing.jsonl"),
        ],
    )
    assert cli.exit_code == 2 and "does not exist" in cli.output, cli.output


def test_lora_path_outside_the_artifact_folder_is_refused(tmp_path: Path) -> None:
    from lmforge.artifact import _digest

    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"not yours")
    adapter = tmp_path / "tuned" / "adapters" / "lora.gguf"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"GGUF-lora")
    program = lf.Predict(SIG, lm=lf.LM("local/gemma-3-270m", lora=adapter, cache=False))
    artifact = tmp_path / "tuned" / "triage@gemma.json"
    program.save(artifact)
    document = json.loads(artifact.read_text())
    document["predictors"]["self"]["lm"]["lora"] = "../secret.gguf"
    body = {k: v for k, v in document.items() if k != "sha256"}
    artifact.write_text(json.dumps({**body, "sha256": _digest(body)}))
    options = ExportOptions(target="managed", model="openai/gpt-4o-mini")
    with pytest.raises(ArtifactError, match=r"outside the artifact's folder"):
        export_bundle(artifact, tmp_path / "out" / "bundle", options)
    assert not any((tmp_path / "out").rglob("secret.gguf"))
    # The export's own check, whatever loading the artifact allows: a path with '..', or a
    # file inside that links outside.
    directory = artifact.parent
    (directory / "adapters" / "link.gguf").symlink_to(secret)
    for lora in ("../secret.gguf", "adapters/../../secret.gguf", "adapters/link.gguf"):
        state = {"predictors": {"self": {"lm": {"lora": lora}}}}
        with pytest.raises(ArtifactError, match=r"points outside the artifact's folder"):
            _adapter_files(state, directory)
    inside = {"predictors": {"self": {"lm": {"lora": "adapters/./lora.gguf"}}}}
    assert _adapter_files(inside, directory) == {"adapters/lora.gguf": b"GGUF-lora"}


def test_write_bundle_refuses_paths_that_leave_it(tmp_path: Path) -> None:
    for relative in ("../x", "/etc/x", "a/../../x"):
        with pytest.raises(ArtifactError, match="inside the bundle"):
            write_bundle(tmp_path / "b", {"ok.txt": b"1", relative: b"2"})
    assert not (tmp_path / "x").exists() and not (tmp_path / "b").exists()


def test_serving_json_may_only_set_limits(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
    bundle = _export(artifact, tmp_path / "bundle")
    serving = json.loads((bundle / "serving.json").read_text())
    assert bundle_limits(serving) == serving["server"]  # the exported limits pass
    cases = {
        "insecure_no_auth": (True, "'insecure_no_auth' is not allowed"),
        "api_keys": (["x" * 20], "'api_keys' is not allowed"),
        "surprise": (1, "'surprise' is not allowed"),
        "rate_limit_burst": ("60", "'rate_limit_burst' must be a positive integer"),
        "max_concurrency": (2.5, "'max_concurrency' must be a positive integer"),
        "request_timeout_s": (-1, "'request_timeout_s' must be a positive number"),
    }
    for key, (value, message) in cases.items():
        changed = {**serving, "server": {**serving["server"], key: value}}
        _rewrite(bundle, "serving.json", json.dumps(changed))
        with pytest.raises(ArtifactError, match=message) as caught:
            load_bundle(bundle)
        if "not allowed" in message:
            allowed = "allowed: batch_concurrency, drift_window, header_timeout_s, keep_alive"
            assert allowed in str(caught.value)
        cli = CliRunner().invoke(_cli(), ["serve", str(bundle)])
        assert cli.exit_code == 1, cli.output
        assert f"ArtifactError: serving.json: server setting {key!r}" in cli.output
        assert "Traceback" not in cli.output


def test_malformed_serving_json_and_manifest_are_artifact_errors(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
    bundle = _export(artifact, tmp_path / "bundle")
    good_serving = (bundle / "serving.json").read_text()
    for text, message in (
        ("{not json", "serving.json is not valid JSON"),
        ("[1, 2]", "is not an lmforge serving file"),
        (json.dumps({**json.loads(good_serving), "predictors": []}), "'predictors' must be"),
    ):
        _rewrite(bundle, "serving.json", text)
        cli = CliRunner().invoke(_cli(), ["serve", str(bundle)])
        assert cli.exit_code == 1 and message in cli.output, cli.output
        assert "Traceback" not in cli.output
        with pytest.raises(ArtifactError, match=message):
            load_bundle(bundle)
    _rewrite(bundle, "serving.json", good_serving)
    manifest = json.loads((bundle / "manifest.json").read_text())
    digest = manifest["files"]["serving.json"]
    for files, message in (
        (["serving.json"], "'files' must be an object"),
        ("serving.json", "'files' must be an object"),
        ({}, "'files' must be an object"),
        ({"../serving.json": digest}, "is not a path inside the bundle"),
        ({"/etc/hostname": digest}, "is not a path inside the bundle"),
        ({"serving.json": 7}, "must be 64 hex digits"),
    ):
        (bundle / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(ArtifactError, match=message):
            verify_bundle(bundle)
    (bundle / "manifest.json").write_text(json.dumps(["not", "a", "manifest"]))
    with pytest.raises(ArtifactError, match="bundle format this lmforge cannot read"):
        verify_bundle(bundle)


def test_k8s_readiness_probe_calls_ready_with_a_key(
    artifact: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    bundle = _export(artifact, tmp_path / "bundle")
    (deployment,) = [
        d
        for d in yaml.safe_load_all((bundle / "k8s/program.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # Run the probe's own code against a served program: it passes with the first key of
    # LMFORGE_API_KEYS, and fails (non-zero exit) with a wrong one.
    assert "'http://127.0.0.1:8080/ready'" in command[2]
    state: dict[str, str | None] = {"reason": None}

    async def check() -> str | None:
        return state["reason"]

    program = lf.Predict(SIG, lm=FunctionLM(lambda r: "[[ ## team ## ]]\nbilling"))
    app = create_app(program, ServerConfig(name="triage", api_keys=(KEY,), readiness=(check,)))
    with serve(app) as url:
        code = command[2].replace("http://127.0.0.1:8080", url)

        def probe(keys: str) -> int:
            env = {**subprocess_env, "LMFORGE_API_KEYS": keys}
            run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
            return run.returncode

        assert probe(f" {KEY} ,another-key-of-24-chars-x") == 0
        assert probe("z" * 24) != 0  # 401
        state["reason"] = "vLLM is not reachable"
        assert probe(KEY) != 0  # 503
    readme = (bundle / "README.md").read_text()
    assert "Every route but `/health` needs" in readme


def test_dockerfile_takes_the_lmforge_spec_as_a_build_arg(artifact: Path, tmp_path: Path) -> None:
    bundle = _export(artifact, tmp_path / "bundle")
    lines = (bundle / "Dockerfile").read_text().splitlines()
    version = lf.__version__
    arg = lines.index(f'ARG LMFORGE_SPEC="lmforge[serve]=={version}"')
    install = lines.index('RUN pip install "$LMFORGE_SPEC"')
    assert arg < install and lines.index("COPY --chown=lmforge:lmforge . /bundle") < install
    assert not [line for line in lines if line.startswith('RUN pip install "lmforge')]
    readme = (bundle / "README.md").read_text()
    assert "--build-arg LMFORGE_SPEC=" in readme
