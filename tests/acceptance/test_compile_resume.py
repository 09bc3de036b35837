"""``lmforge compile --optimizer mipro`` killed with SIGKILL mid-search, then rerun: the
finished trials are kept (not redone), the run completes its trials, and the artifact is
byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

FIXTURE = Path(__file__).parent / "fixtures" / "mipro_cli.py"
TEAMS = {
    "refund": "billing",
    "invoice": "billing",
    "crash": "technical",
    "login": "technical",
    "price": "sales",
    "quote": "sales",
}
TRIALS = 10

pytestmark = pytest.mark.slow


def write_split(path: Path, n: int, offset: int) -> None:
    words = list(TEAMS)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            word = words[(i + offset) % len(words)]
            handle.write(
                json.dumps({"ticket": f"{word} issue {i + offset}", "team": TEAMS[word]}) + "\n"
            )


def command(python: str, data: Path, out: Path) -> list[str]:
    return [
        python,
        str(FIXTURE),
        "compile",
        f"{FIXTURE}:program",
        "--train",
        str(data / "train.jsonl"),
        "--dev",
        str(data / "dev.jsonl"),
        "--test",
        str(data / "test.jsonl"),
        "--metric",
        "exact_match",
        "--optimizer",
        "mipro",
        "--model",
        "test/fake",
        "--out",
        str(out),
        "--no-progress",
        "-o",
        f"num_trials={TRIALS}",
        "-o",
        "minibatch_size=4",
        "-o",
        "num_instruction_candidates=3",
        "-o",
        "num_demo_sets=3",
    ]


def completed_trials(out: Path) -> list[tuple[int, str, float]]:
    """(number, params, value) of the COMPLETE trials in the run's study database."""
    found = sorted(out.glob(".runs/*/study.db"))
    if not found:
        return []
    try:
        with sqlite3.connect(f"file:{found[0]}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT t.number, t.trial_id, v.value FROM trials t "
                "JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'COMPLETE' ORDER BY t.number"
            ).fetchall()
            params = {
                trial_id: json.dumps(
                    sorted(
                        db.execute(
                            "SELECT param_name, param_value FROM trial_params WHERE trial_id = ?",
                            (trial_id,),
                        ).fetchall()
                    )
                )
                for _, trial_id, _ in rows
            }
    except sqlite3.Error:
        return []  # created but not migrated yet, or locked for a moment
    return [(number, params[trial_id], value) for number, trial_id, value in rows]


def trial_states(out: Path) -> list[str]:
    (db_file,) = out.glob(".runs/*/study.db")
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT state FROM trials ORDER BY number")]


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_killed_compile_resumes_without_redoing_finished_trials(
    tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_split(data / "train.jsonl", 8, 0)
    write_split(data / "dev.jsonl", 12, 3)
    write_split(data / "test.jsonl", 6, 7)

    # an uninterrupted run, for reference
    whole, whole_log = tmp_path / "whole", tmp_path / "whole.log"
    env = {**subprocess_env, "MIPRO_CALL_LOG": str(whole_log)}
    done = subprocess.run(
        command(python, data, whole), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert len(completed_trials(whole)) == TRIALS

    # the same command, killed once at least one trial has finished
    out, log = tmp_path / "out", tmp_path / "first.log"
    env = {**subprocess_env, "MIPRO_CALL_LOG": str(log)}
    child = subprocess.Popen(
        command(python, data, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    try:
        while len(completed_trials(out)) < 1:
            assert child.poll() is None, (
                f"the run ended before it could be killed: {child.communicate()[1]!r}"
            )
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    before = completed_trials(out)
    assert 1 <= len(before) < TRIALS
    assert not (out / "report.json").exists()

    # rerun: it resumes
    log2 = tmp_path / "second.log"
    env = {**subprocess_env, "MIPRO_CALL_LOG": str(log2)}
    again = subprocess.run(
        command(python, data, out), env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(before)} of {TRIALS} trial(s) done" in again.stderr

    after = completed_trials(out)
    assert len(after) == TRIALS
    assert after[: len(before)] == before  # finished trials kept as they were
    states = trial_states(out)
    assert states.count("COMPLETE") == TRIALS and "RUNNING" not in states
    # no finished work was redone: at most the evaluations cut off by the kill
    redone = calls(log) + calls(log2) - calls(whole_log)
    assert 0 <= redone <= 12 + 4
    assert calls(log2) < calls(whole_log)
    assert "prompt" not in log2.read_text()  # proposals came from the checkpoint

    artifact = "program@test_fake.json"
    assert (out / artifact).read_bytes() == (whole / artifact).read_bytes()
    report = json.loads((out / "report.json").read_text())
    minibatch = [t for t in report["runs"][0]["trials"] if t["kind"] == "minibatch"]
    assert len(minibatch) == TRIALS


def test_two_workers_share_one_study(
    tmp_path: Path, python: str, subprocess_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_split(data / "train.jsonl", 8, 0)
    write_split(data / "dev.jsonl", 12, 3)
    write_split(data / "test.jsonl", 6, 7)
    out = tmp_path / "out"
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [
        subprocess.Popen(
            command(python, data, out),
            env={**subprocess_env, "MIPRO_CALL_LOG": str(log)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for log in logs
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    trials = completed_trials(out)
    # each worker stops once the study has TRIALS finished trials; one in flight may finish too
    assert TRIALS <= len(trials) <= TRIALS + 1
    assert len(list(out.glob(".runs/*/study.db"))) == 1
    prompt_calls = [log.read_text().count("prompt") for log in logs]
    assert sorted(prompt_calls)[0] == 0 < sorted(prompt_calls)[1]  # candidates were built once
    assert all(log.read_text().count("task") > 0 for log in logs)  # both ran trials
