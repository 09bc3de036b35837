"""Crash safety: concurrent cache writers and SIGKILL during artifact writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lmforge as lf
import pytest

pytestmark = pytest.mark.reliability

WRITER = textwrap.dedent(
    """
    import sys
    import lmforge as lf
    from lmforge.testing import FunctionLM

    worker, count, cache_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    lm = FunctionLM(lambda request: "answer for " + request.prompt, model="test/cache",
                    model_type="text", cache=cache_dir)
    for i in range(count):
        # Own keys plus keys every worker writes, to exercise write races on one key.
        key = f"w{worker}-{i}" if i % 4 else f"shared-{i}"
        assert lm(key) == ["answer for " + key]
    """
)


def test_four_processes_writing_the_cache_lose_nothing(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    count = 120
    procs = [
        subprocess.Popen([sys.executable, str(script), str(w), str(count), str(cache_dir)])
        for w in range(4)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0, 0]

    from lmforge.testing import FunctionLM

    def must_not_be_called(request: lf.LMRequest) -> str:
        raise AssertionError(f"cache miss for {request.prompt!r}")

    reader = FunctionLM(
        must_not_be_called, model="test/cache", model_type="text", cache=str(cache_dir)
    )
    expected = {f"w{w}-{i}" if i % 4 else f"shared-{i}" for w in range(4) for i in range(count)}
    with lf.track() as tracker:
        for key in sorted(expected):
            assert reader(key) == ["answer for " + key]
    assert tracker.cache_hits == len(expected)
    assert len(reader.cache) == len(expected)  # type: ignore[arg-type]


SAVER = textwrap.dedent(
    """
    import sys
    import lmforge as lf

    path = sys.argv[1]
    demos = [{"question": "q" * 2000 + str(i), "answer": "a" * 2000} for i in range(300)]
    program = lf.Predict("question -> answer", demos=demos)
    print("ready", flush=True)
    while True:
        program.save(path, meta={"round": 1})
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45])
def test_sigkill_during_save_never_leaves_a_partial_artifact(tmp_path: Path, delay: float) -> None:
    target = tmp_path / "program.json"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    visible = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert sorted(p.name for p in visible) == sorted(
        ["saver.py", *(["program.json"] if target.exists() else [])]
    )
    if target.exists():
        program = lf.load(target)  # a complete, verified artifact or nothing at all
        assert len(program.demos) == 300  # type: ignore[attr-defined]
        assert json.loads(target.read_text())["meta"] == {"round": 1}


EXPORTER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import lmforge as lf
    from lmforge.targets.export import ExportOptions, export_bundle

    artifact, out = Path(sys.argv[1]), Path(sys.argv[2])
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    demos = [{"ticket": "t" * 3000 + str(i), "team": "billing"} for i in range(200)]
    lf.Predict(sig, lm=lf.LM("openai/gpt-4o-mini", cache=False), demos=demos).save(artifact)
    export_bundle(artifact, out, ExportOptions(target="managed"), force=True)
    print("ready", flush=True)
    while True:
        export_bundle(artifact, out, ExportOptions(target="managed"), force=True)
    """
)


@pytest.mark.parametrize("delay", [0.02, 0.15, 0.4])
def test_sigkill_during_export_force_always_leaves_a_verified_bundle(
    tmp_path: Path, delay: float, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("fastapi")
    from lmforge.targets.bundle import verify_bundle

    out = tmp_path / "bundles" / "triage"
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    for round_ in range(3):  # a kill at a different point of the swap each round
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "triage.json"), str(out)],
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay * (round_ + 1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # The old or the new bundle is at --out at every instant, complete; staging copies
        # and the replaced bundle are hidden dot-folders beside it.
        assert out.is_dir()
        assert verify_bundle(out)["name"] == "triage"  # every file present, sha256 matching
        assert [p.name for p in out.parent.iterdir() if not p.name.startswith(".")] == ["triage"]
    _export_cleans_up(tmp_path / "triage.json", out)


def _export_cleans_up(artifact: Path, out: Path) -> None:
    """The next export removes what the killed exporters left beside the bundle."""
    from lmforge.targets.export import ExportOptions, export_bundle

    export_bundle(artifact, out, ExportOptions(target="managed"), force=True)
    assert [p.name for p in out.parent.iterdir()] == [out.name]


KILLED_AT_STEP = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    from lmforge import _atomic
    from lmforge.targets.export import ExportOptions, export_bundle

    artifact, out, exchange = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[4]
    step = int(sys.argv[3])
    steps = []

    def then_die(operation):
        def run(*args, **kwargs):
            result = operation(*args, **kwargs)
            steps.append(operation.__name__)
            if len(steps) == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return run

    os.rename, os.replace, shutil.rmtree = map(then_die, (os.rename, os.replace, shutil.rmtree))
    if exchange == "exchange":
        _atomic._exchange = then_die(_atomic._exchange)
    else:  # a system or filesystem without renameat2(RENAME_EXCHANGE)
        _atomic._exchange = lambda first, second: False
    export_bundle(artifact, out, ExportOptions(target="managed"), force=True)
    """
)


@pytest.mark.parametrize("exchange", ["exchange", "two renames"])
def test_sigkill_after_each_step_of_the_bundle_swap(
    tmp_path: Path, exchange: str, subprocess_env: dict[str, str]
) -> None:
    # Killed between its two renames, `export --force` left no bundle at --out and the old
    # one in a hidden `.NAME.old-PID` folder forever.
    pytest.importorskip("fastapi")
    from lmforge.targets.bundle import verify_bundle
    from lmforge.targets.export import ExportOptions, export_bundle

    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    program = lf.Predict(sig, lm=lf.LM("openai/gpt-4o-mini", cache=False))
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    program.save(old, meta={"round": 1})
    program.save(new, meta={"round": 2})
    shas = {json.loads(path.read_text())["sha256"] for path in (old, new)}
    out = tmp_path / "bundles" / "triage"
    script = tmp_path / "killed_at_step.py"
    script.write_text(KILLED_AT_STEP)
    codes = []
    for step in range(1, 5):
        export_bundle(old, out, ExportOptions(target="managed"), force=True)
        command = [sys.executable, str(script), str(new), str(out), str(step), exchange]
        codes.append(
            subprocess.run(command, env=subprocess_env, timeout=60, check=False).returncode
        )
        if exchange == "exchange":  # one atomic swap: a bundle is at --out at every instant
            assert out.is_dir(), f"no bundle after a kill at step {step}"
        # verify_bundle (also run by `serve`) first puts back a bundle left aside
        assert verify_bundle(out)["artifact_sha256"] in shas, f"killed at step {step}"
        _export_cleans_up(new, out)
    assert codes[0] == -signal.SIGKILL and set(codes) <= {0, -signal.SIGKILL}
