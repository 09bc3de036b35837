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
    export_bundle(artifact, out, ExportOptions(target="managed"))
    print("ready", flush=True)
    while True:
        export_bundle(artifact, out, ExportOptions(target="managed"), force=True)
    """
)


@pytest.mark.parametrize("delay", [0.02, 0.15, 0.4])
def test_sigkill_during_export_never_leaves_a_partial_bundle(
    tmp_path: Path, delay: float, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("fastapi")
    from lmforge.targets.bundle import verify_bundle

    out = tmp_path / "bundles" / "triage"
    script = tmp_path / "exporter.py"
    script.write_text(EXPORTER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "triage.json"), str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # Only the bundle itself is visible next to it: staging copies are hidden dot-folders.
    visible = [p.name for p in out.parent.iterdir() if not p.name.startswith(".")]
    assert visible in ([], ["triage"])
    if out.exists():
        manifest = verify_bundle(out)  # every file present and matching its sha256
        assert manifest["name"] == "triage"
