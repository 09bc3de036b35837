"""Bad `lmforge export` / `lmforge serve` values are one-line errors, and a bundle refuses
code added to its program_source/ after export."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.errors import ArtifactError
from lmforge.targets.bundle import load_bundle
from lmforge.targets.config import ServerConfig
from lmforge.targets.export import ExportOptions, export_bundle

KEY = "test-key-0123456789abcdef"


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    program = lf.Predict(sig, lm=lf.LM("local/gemma-3-270m", cache=False))
    path = tmp_path / "triage@gemma.json"
    program.save(path)
    return path


def _cli(args: list[str]) -> tuple[int, str]:
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.main import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("flag", "value", "target"),
    [
        ("--max-num-seqs", "0", "vllm"),
        ("--max-tokens", "-5", "vllm"),
        ("--tensor-parallel-size", "0", "vllm"),
        ("--gpu-memory-utilization", "7", "vllm"),
        ("--gpu-memory-gib", "-3", "vllm"),
        ("--gpu-memory-gib", "1e308", "vllm"),
        ("--dtype", "garbage", "vllm"),
        ("--max-model-len", "0", "vllm"),
        ("--image", 'x"; rm -rf /', "vllm"),
        ("--api-key-env", "BAD NAME", "managed"),
    ],
)
def test_bad_export_values_are_one_line_errors(
    artifact: Path, tmp_path: Path, flag: str, value: str, target: str
) -> None:
    # No model config: the memory plan is skipped, so these were written into vllm.yaml,
    # the manifests and the README's commands unchecked.
    out = tmp_path / "bundle"
    code, output = _cli(
        ["export", str(artifact), "-t", target, "-o", str(out), "--model", "openai/x", flag, value]
        if target == "managed"
        else ["export", str(artifact), "-t", target, "-o", str(out), flag, value]
    )
    assert code == 2, output
    assert output.startswith("error: ") and flag in output
    assert "Traceback" not in output and output.count("\n") == 1
    assert not out.exists()


def test_good_export_values_still_pass(tmp_path: Path, artifact: Path) -> None:
    options = ExportOptions(
        target="vllm",
        dtype="BF16",
        image="registry.example.com:5000/team/triage-program:1.0",
        max_model_len=1024,
        gpu_memory_utilization=1.0,
    )
    assert (export_bundle(artifact, tmp_path / "bundle", options).path / "vllm.yaml").is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "0"], "--port"),
        (["--graceful-timeout", "-5"], "--graceful-timeout"),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--header-timeout", "nan"], "--header-timeout"),
        (["--max-connections", "0"], "--max-connections"),
        (["--keep-alive-timeout", "-1"], "--keep-alive-timeout"),
        (["--rate-limit-per-minute", "inf"], "--rate-limit-per-minute"),
        (["--rate-limit-burst", "0"], "--rate-limit-burst"),
    ],
)
def test_bad_serve_flags_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    # Port 70000 was passed on to the socket, which listened on 70000 % 65536 while the
    # banner said 70000.
    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
    code, output = _cli(["serve", str(tmp_path / "bundle"), *args])
    assert code == 2, output
    assert output.startswith("error: ") and says in output and output.count("\n") == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_serve_refuses_no_auth_on_a_non_loopback_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    # --insecure-no-auth --host 0.0.0.0 served without authentication on every interface,
    # with only a warning.
    monkeypatch.delenv("LMFORGE_API_KEYS", raising=False)
    code, output = _cli(["serve", str(tmp_path / "bundle"), "--insecure-no-auth", "--host", host])
    assert code == 2, output
    assert output.startswith("error: ") and output.count("\n") == 1
    assert f"--host {host}" in output and "--allow-public-no-auth" in output


@pytest.mark.parametrize(
    "args",
    [
        ["--host", "127.0.0.1"],
        ["--host", "127.8.0.1"],
        ["--host", "localhost"],
        ["--host", "::1"],
        ["--host", "0.0.0.0", "--allow-public-no-auth"],
    ],
)
def test_serve_allows_no_auth_on_loopback_or_with_the_second_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.delenv("LMFORGE_API_KEYS", raising=False)
    missing = tmp_path / "no-such-bundle"
    code, output = _cli(["serve", str(missing), "--insecure-no-auth", *args])
    # Past the authentication check: the missing bundle is what stops it.
    assert code != 0 and output.startswith("error: ") and output.count("\n") == 1, output
    assert "not an lmforge bundle" in output and "--allow-public-no-auth" not in output


def test_serve_help_says_limits_are_per_process() -> None:
    code, output = _cli(["serve", "--help"])
    text = " ".join(output.replace("│", " ").split())
    assert code == 0
    assert "Limits (rate, burst, concurrency, connections) hold per process" in text
    assert "the gateway in front owns the global limits" in text
    assert "global limit / replicas" in text


def test_code_added_to_program_source_after_export_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "review_triage_prog.py").write_text(
        textwrap.dedent(
            """
            import lmforge as lf

            class Triage(lf.Module):
                def __init__(self):
                    super().__init__()
                    self.step = lf.Predict("ticket: str -> team: str")

                def forward(self, ticket):
                    return self.step(ticket=ticket)
            """
        )
    )
    monkeypatch.syspath_prepend(str(package))
    import review_triage_prog

    program = review_triage_prog.Triage()
    program.step.lm = lf.LM("openai/gpt-4o-mini", cache=False)
    artifact = tmp_path / "triage@gpt.json"
    program.save(artifact)
    options = ExportOptions(target="managed", trusted_modules=("review_triage_prog",))
    bundle = export_bundle(artifact, tmp_path / "bundle", options).path
    assert (bundle / "program_source" / "review_triage_prog.py").is_file()
    config = ServerConfig(api_keys=(KEY,))
    # Python's own bytecode cache is fine: serving writes it there.
    (bundle / "program_source" / "__pycache__").mkdir()
    (bundle / "program_source" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"")
    load_bundle(bundle, config)

    # program_source/ goes on sys.path: a module added there (one the server imports
    # lazily, like litellm) would run without failing any hash.
    (bundle / "program_source" / "review_added_mod.py").write_text("RAN = True\n")
    try:
        with pytest.raises(ArtifactError, match="not in the bundle's manifest"):
            load_bundle(bundle, config)
    finally:
        sys.modules.pop("review_triage_prog", None)


def test_run_says_when_the_artifacts_endpoint_is_not_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without the note, the run failed after its retries with a bare DNS error.
    from lmforge.cli.run import _note_untrusted_endpoints

    sig = lf.Signature.parse("ticket: str -> team: str")
    lm = lf.LM("hosted_vllm/m", api_base="http://127.0.0.1:9/v1", cache=False)
    path = tmp_path / "triage@vllm.json"
    lf.Predict(sig, lm=lm).save(path)
    _note_untrusted_endpoints(path)
    assert "--allow-endpoints" in capsys.readouterr().err
    lf.Predict(sig, lm=lf.LM("openai/gpt-4o-mini", cache=False)).save(path)
    _note_untrusted_endpoints(path)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("[1, 2]", "not an object"),
        ('{"hidden_size": "x", "num_hidden_layers": 2, "num_attention_heads": 2}', "hidden_size"),
        ('{"num_hidden_layers": 4}', "num_attention_heads"),
        ('{"text_config": 5}', "num_hidden_layers"),
    ],
)
def test_malformed_model_config_is_a_one_line_error(
    artifact: Path, tmp_path: Path, config: str, says: str
) -> None:
    # These raised AttributeError / ValueError / KeyError tracebacks from the memory plan.
    path = tmp_path / "config.json"
    path.write_text(config)
    code, output = _cli(
        [
            "export",
            str(artifact),
            "-t",
            "vllm",
            "-o",
            str(tmp_path / "b"),
            "--model-config",
            str(path),
        ]
    )
    assert code == 2, output
    assert output.startswith("error: ") and says in output and output.count("\n") == 1


def test_serve_gives_uvicorn_the_connection_limits_and_one_line_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from lmforge.targets.logsafe import OneLineFormatter

    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    artifact = tmp_path / "triage@gpt.json"
    lf.Predict(sig, lm=lf.LM("openai/gpt-4o-mini", cache=False)).save(artifact)
    bundle = export_bundle(artifact, tmp_path / "bundle", ExportOptions(target="managed")).path
    monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
    seen: dict[str, uvicorn.Config] = {}
    # Stop at the point of listening: what matters is what uvicorn was given.
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: seen.update(c=self.config)
    )
    code, output = _cli(
        [
            "serve",
            str(bundle),
            "--header-timeout",
            "3",
            "--max-connections",
            "7",
            "--keep-alive-timeout",
            "2",
            "--rate-limit-per-minute",
            "30",
        ]
    )
    assert code == 0, output
    config: Any = seen["c"]
    assert config.http.header_timeout_s == 3 and config.http.max_connections == 7
    assert config.timeout_keep_alive == 2 and config.access_log is False
    assert config.log_config["formatters"]["one_line"]["()"] is OneLineFormatter
    assert config.app.state.runtime.config.rate_limit_per_minute == 30
