"""MLflow stays out of the way until asked for: importing lmforge, its integrations package,
the optimizers or the CLI's compile and export loads neither mlflow nor pandas, and a missing
mlflow is a one-line error naming the extra (these run without the mlflow extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lmforge.errors import MissingExtraError


def test_imports_load_no_mlflow() -> None:
    code = (
        "import sys, json, lmforge, lmforge.integrations, lmforge.optimizers\n"
        "import lmforge.cli.compile, lmforge.targets.export\n"
        "print(json.dumps([m for m in ('mlflow', 'pandas') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_missing_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.integrations.mlflow import log_model

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'lmforge\[mlflow\]'"):
        log_model("triage.json", "triage")


def test_compile_mlflow_without_mlflow_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmforge.cli.compile  # noqa: F401 (registers the command)
    from lmforge.cli.app import app
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    (tmp_path / "prog.py").write_text('import lmforge as lf\nprogram = lf.Predict("q -> a")\n')
    (tmp_path / "train.jsonl").write_text('{"q": "x", "a": "y"}\n')
    args = ["compile", "prog.py:program", "--train", "train.jsonl", "--metric", "exact_match"]
    result = CliRunner().invoke(app, [*args, "--model", "test/m", "--out", "out", "--mlflow"])
    assert result.exit_code == 1
    assert "pip install 'lmforge[mlflow]'" in result.stderr
    assert not (tmp_path / "out" / ".runs").exists()
