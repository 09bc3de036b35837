"""The model of the batch tests: a loopback OpenAI-compatible server (the reliability
suite's fault server, no faults) answering ``question -> answer, score: int`` programs.

Question ``q-N`` is answered ``A-N`` with score N, except every N with N % 7 == 3, whose
score is not a number: that row fails to parse, so every run has failed rows to keep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmforge as lf
from reliability.fault_server import FaultPlan, FaultServer


def failing(n: int) -> bool:
    return n % 7 == 3


def respond(prompt: str) -> str:
    n = int(re.findall(r"q-(\d+)", prompt)[-1])
    score = "not a number" if failing(n) else str(n)
    return f"[[ ## answer ## ]]\nA-{n}\n\n[[ ## score ## ]]\n{score}\n\n[[ ## completed ## ]]"


@contextmanager
def model_server(latency: float = 0.0) -> Iterator[FaultServer]:
    """The fake model on 127.0.0.1, answering after ``latency`` seconds."""
    server = FaultServer(respond, FaultPlan(latency=latency))
    with server.running():
        yield server


def write_artifact(path: Path) -> Path:
    """A compiled ``question -> answer, score: int`` program for ``openai/fake-model``; the
    artifact records no endpoint (the run names it)."""
    lf.Predict("question -> answer, score: int", lm=lf.LM("openai/fake-model")).save(path)
    return path


def write_rows(path: Path, count: int) -> Path:
    """``count`` JSONL rows ``{"id": N, "question": "q-N"}``."""
    lines = (json.dumps({"id": n, "question": f"q-{n}"}) + "\n" for n in range(count))
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_row(n: int) -> dict[str, object]:
    """The outcome columns of row ``n``."""
    if failing(n):
        return {"answer": None, "score": None}
    return {"answer": f"A-{n}", "score": n, "error": None}
