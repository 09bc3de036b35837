"""`lmforge export --force` replaces only a bundle, never the current directory, and a
bundle swap interrupted half-way is put back and cleaned up on the next look."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import lmforge as lf
import pytest
from lmforge import _atomic
from lmforge.targets.bundle import verify_bundle
from lmforge.targets.export import ExportOptions, export_bundle

MANAGED = ["-t", "managed", "--model", "openai/gpt-4o-mini"]


@pytest.fixture
def triage(tmp_path: Path) -> Path:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    path = tmp_path / "triage.json"
    lf.Predict(sig, lm=lf.LM("openai/gpt-4o-mini", cache=False)).save(path)
    return path


def _export(*args: str) -> tuple[int, str]:
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.main import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["export", *args])
    return result.exit_code, result.output


def _one_line_error(code: int, output: str, says: str) -> None:
    assert code == 2, output
    assert output.startswith("error: ") and says in output, output
    assert "Traceback" not in output and output.count("\n") == 1, output


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_force_refuses_a_folder_that_is_not_a_bundle(triage: Path, tmp_path: Path) -> None:
    # --force deleted whatever the folder held (a home directory, a source tree).
    out = tmp_path / "project"
    (out / "src").mkdir(parents=True)
    (out / "src" / "main.py").write_text("print('mine')\n")
    code, output = _export(str(triage), "-o", str(out), "--force", *MANAGED)
    _one_line_error(code, output, "not an lmforge bundle")
    assert (out / "src" / "main.py").read_text() == "print('mine')\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "triage.json"]


def test_force_replaces_a_bundle(triage: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert _export(str(triage), "-o", str(out), *MANAGED)[0] == 0
    (out / "serving.json").write_text("{}")  # even a damaged bundle may be replaced
    code, output = _export(str(triage), "-o", str(out), "--force", *MANAGED)
    assert code == 0, output
    verify_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "triage.json"]


@pytest.mark.parametrize(("cwd", "out"), [("bundle", "."), ("bundle/k8s", ".."), ("x", "..")])
def test_out_at_or_above_the_current_directory_is_a_one_line_error(
    triage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd: str, out: str
) -> None:
    # `export --out . --force` from inside a bundle ended in an OSError traceback.
    bundle = export_bundle(triage, tmp_path / "bundle", ExportOptions(target="managed")).path
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / cwd)
    code, output = _export(str(triage), "-o", out, "--force", *MANAGED)
    _one_line_error(code, output, "current directory")
    verify_bundle(bundle)


def test_bundle_left_aside_by_an_interrupted_swap_is_put_back(triage: Path, tmp_path: Path) -> None:
    # Where RENAME_EXCHANGE is unavailable the old bundle is renamed aside first; a kill
    # right then left no bundle at --out and a hidden copy forever.
    out = export_bundle(triage, tmp_path / "bundle", ExportOptions(target="managed")).path
    aside = tmp_path / f".bundle.{_atomic._writer_tag()}-{_dead_pid()}-0badcafe.old"
    os.rename(out, aside)
    assert verify_bundle(out)["name"] == "triage"  # serve and verify look here first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "triage.json"]

    os.rename(out, aside)
    export_bundle(triage, out, ExportOptions(target="managed"), force=True)
    verify_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "triage.json"]


def test_export_cleans_what_killed_exports_left(triage: Path, tmp_path: Path) -> None:
    out = export_bundle(triage, tmp_path / "bundle", ExportOptions(target="managed")).path
    staging = tmp_path / f".bundle.{_atomic._writer_tag()}-{_dead_pid()}-00c0ffee.tmp"
    (staging / "k8s").mkdir(parents=True)
    (staging / "k8s" / "program.yaml").write_text("half")
    export_bundle(triage, out, ExportOptions(target="managed"), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "triage.json"]


def test_serve_puts_back_a_bundle_left_aside_with_its_own_limits(
    triage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)
    from lmforge.cli.main import app
    from lmforge.targets import server
    from typer.testing import CliRunner

    out = export_bundle(triage, tmp_path / "bundle", ExportOptions(target="managed")).path
    os.rename(out, tmp_path / f".bundle.{_atomic._writer_tag()}-{_dead_pid()}-0badcafe.old")
    served = []
    monkeypatch.setattr(server, "create_app", lambda program, config: served.append(config))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: None)
    monkeypatch.setenv("LMFORGE_API_KEYS", "test-key-0123456789abcdef")
    result = CliRunner().invoke(app, ["serve", str(out)])
    assert result.exit_code == 0, result.output
    # the bundle's serving.json limits (32 = 2 x --max-num-seqs), not the server defaults
    assert [config.max_concurrency for config in served] == [32]


def test_export_puts_back_and_cleans_what_earlier_versions_left(
    triage: Path, tmp_path: Path
) -> None:
    # Earlier versions staged as `.NAME.tmp-XXXXXXXX` and moved the old bundle aside as
    # `.NAME.old-PID`; killed between two renames, no bundle was left at --out.
    out = export_bundle(triage, tmp_path / "bundle", ExportOptions(target="managed")).path
    os.rename(out, tmp_path / f".bundle.old-{_dead_pid()}")
    stale = tmp_path / ".bundle.tmp-a1b2c3d4"
    (stale / "k8s").mkdir(parents=True)
    past = time.time() - _atomic.STALE_AFTER_S - 60
    os.utime(stale, (past, past))
    code, output = _export(str(triage), "-o", str(out), *MANAGED)
    assert code == 2 and "--force" in output  # the old bundle is back at --out
    verify_bundle(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "triage.json"]
