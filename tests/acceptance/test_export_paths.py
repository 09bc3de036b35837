"""`lmforge export` of an artifact from someone else: the adapter folder it records must
be inside the artifact's folder, or nothing is copied into the bundle; the code it names is
imported only with --trust."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.artifact import _digest
from typer.testing import CliRunner

pytest.importorskip("fastapi")


def _app() -> Any:
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.app import app

    return app


def _export(artifact: Path, out: Path, *extra: str) -> tuple[int, str]:
    done = CliRunner().invoke(
        _app(),
        [
            "export",
            str(artifact),
            "-t",
            "vllm",
            "-o",
            str(out),
            "--model",
            "org/base-model",
            *extra,
        ],
    )
    return done.exit_code, done.output


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    """A fine-tuned program's artifact, its PEFT adapter folder saved next to it."""
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    path = tmp_path / "shared" / "tuned@base.json"
    lf.Predict("q -> a").save(path, meta={"finetune": {"adapter_path": str(adapter)}})
    return path


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    secret = tmp_path / "home" / ".ssh"
    secret.mkdir(parents=True)
    (secret / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (secret / "adapter_config.json").write_text('{"r": 8}')  # looks like an adapter folder
    return secret


def _rehash(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    body = {k: v for k, v in document.items() if k != "sha256"}
    path.write_text(json.dumps({**body, "sha256": _digest(body)}))


def test_export_carries_the_adapter_folder_inside(tmp_path: Path, artifact: Path) -> None:
    code, output = _export(artifact, tmp_path / "bundle")
    assert code == 0, output
    assert list((tmp_path / "bundle" / "adapters").rglob("adapter_model.safetensors"))


@pytest.mark.parametrize("escape", ["../home/.ssh", "adapters/link", "top-level"])
def test_export_refuses_an_adapter_path_leading_out(
    tmp_path: Path, artifact: Path, planted: Path, escape: str
) -> None:
    (artifact.parent / "adapters" / "link").symlink_to(planted)
    if escape == "top-level":
        # Only the top-level key: the vllm target reads it when finetune has none.
        _rehash(
            artifact,
            lambda d: (d["meta"].pop("finetune"), d["meta"].update(adapter_path="../home/.ssh")),
        )
    else:
        _rehash(artifact, lambda d: d["meta"]["finetune"].update(adapter_path=escape))
    code, output = _export(artifact, tmp_path / "bundle")
    assert code != 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "ArtifactError" in lines[0] and "points outside the artifact's folder" in lines[0]
    assert not any(tmp_path.rglob("bundle*/**/id_rsa"))
    assert not (tmp_path / "bundle").exists()


def test_export_imports_the_program_class_only_with_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "lf_export_prog.py").write_text(
        "import lmforge as lf\n\nclass Triage(lf.Predict):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(code_dir))
    path = tmp_path / "triage@base.json"
    lf.Predict("q -> a").save(path)
    _rehash(path, lambda d: d["program"].update(type="lf_export_prog:Triage"))
    try:
        code, output = _export(path, tmp_path / "refused")
        assert code != 0 and "--trust lf_export_prog" in output, output
        assert "lf_export_prog" not in sys.modules
        code, output = _export(
            path, tmp_path / "bundle", "--trust", str(code_dir / "lf_export_prog.py")
        )
        assert code == 0, output
        assert (tmp_path / "bundle" / "program_source" / "lf_export_prog.py").is_file()
    finally:
        sys.modules.pop("lf_export_prog", None)
