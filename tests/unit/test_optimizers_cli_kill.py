"""``lmforge compile`` killed with SIGKILL mid-run and started again: finished steps are not
redone, the run completes, and the artifact equals the one of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from optimizer_fakes import TRAIN, VAL

LMS = textwrap.dedent(
    """
    import os
    import re
    import time

    from lmforge.testing import FunctionLM

    KEYWORDS = {"refund": "billing", "invoice": "billing", "crash": "technical",
                "login": "technical", "price": "sales", "demo": "sales"}


    def reply(request):
        with open(os.environ["FAKE_LM_LOG"], "a") as log:
            log.write("call\\n")
        time.sleep(float(os.environ.get("FAKE_LM_DELAY", "0")))
        prompt = request.as_text()
        if not re.search(r"^Team: \\S", prompt, flags=re.M):
            return " sales"
        ticket = re.findall(r"^Ticket: (.*)$", prompt, flags=re.M)[-1]
        return " " + next((t for w, t in KEYWORDS.items() if w in ticket), "sales")


    router = FunctionLM(reply, model_type="text", model="fake/router")
    """
)
PROGRAM = 'import lmforge as lf\n\nprogram = lf.Predict("ticket -> team")\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "lms.py").write_text(LMS)
    (tmp_path / "prog.py").write_text(PROGRAM)
    for name, rows in (("train", TRAIN), ("dev", VAL)):
        lines = "".join(json.dumps(ex.to_dict()) + "\n" for ex in rows)
        (tmp_path / f"{name}.jsonl").write_text(lines)
    return tmp_path


def command(python: str, out: str) -> list[str]:
    return [
        python, "-m", "lmforge.cli.main", "compile", "prog.py:program",
        "--train", "train.jsonl", "--dev", "dev.jsonl", "--metric", "exact_match",
        "--optimizer", "random", "-o", "num_candidates=2", "-o", "max_labeled_demos=2",
        "--model", "lms.py:router", "--out", out, "--no-baseline", "--no-progress",
        "--concurrency", "1",
    ]  # fmt: skip


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def stored_calls(out: Path) -> int:
    steps = out.glob(".runs/*/steps/*.json")
    return sum(json.loads(step.read_text())["usage"]["lm_calls"] for step in steps)


def test_killed_compile_resumes_without_redoing_finished_steps(
    project: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    def env(log: str, delay: float) -> dict[str, str]:
        return {**subprocess_env, "FAKE_LM_LOG": str(project / log), "FAKE_LM_DELAY": str(delay)}

    done = subprocess.run(command(python, "whole"), cwd=project, env=env("whole.log", 0),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    total = calls(project / "whole.log")
    assert total > 10

    first_log = project / "first.log"
    victim = subprocess.Popen(command(python, "out"), cwd=project, env=env("first.log", 0.05),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while calls(first_log) < total // 2 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert not (project / "out" / "program@fake_router.json").exists()
    finished = stored_calls(project / "out")
    assert 0 < finished < total

    again = subprocess.run(command(python, "out"), cwd=project, env=env("second.log", 0),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert calls(project / "second.log") == total - finished  # nothing finished was redone
    resumed = (project / "out" / "program@fake_router.json").read_bytes()
    assert resumed == (project / "whole" / "program@fake_router.json").read_bytes()
