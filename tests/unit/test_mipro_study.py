"""Releasing trials left RUNNING by killed workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from lmforge.optimizers import mipro_study as ms  # noqa: E402
from optuna.trial import TrialState  # noqa: E402


def _study(tmp_path: Path) -> optuna.Study:
    return ms.open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", ms.SlotSampler(0))


def _running(study: optuna.Study, owner: dict[str, object] | None) -> int:
    trial_id = study._storage.create_new_trial(study._study_id)
    if owner is not None:
        study._storage.set_trial_user_attr(trial_id, ms.WORKER_ATTR, owner)
    return trial_id


def _state(study: optuna.Study, trial_id: int) -> TrialState:
    return study._storage.get_trial(trial_id).state


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_trials_of_dead_local_workers_fail_and_live_ones_stay(tmp_path: Path) -> None:
    study = _study(tmp_path)
    host = ms.worker_id()["host"]
    dead = _running(study, {"host": host, "pid": _dead_pid()})
    live = _running(study, {"host": host, "pid": os.getpid()})
    remote = _running(study, {"host": f"not-{host}", "pid": 1})
    assert ms.release_dead_trials(study) == 1
    assert _state(study, dead) == TrialState.FAIL
    assert _state(study, live) == _state(study, remote) == TrialState.RUNNING


def test_a_trial_never_claimed_by_its_worker_is_released_after_a_short_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a worker killed between optuna creating the trial and the worker recording itself
    monkeypatch.setattr(ms, "UNCLAIMED_S", 0.3)
    study = _study(tmp_path)
    orphan = _running(study, None)
    assert ms.release_dead_trials(study) == 1
    assert _state(study, orphan) == TrialState.FAIL


def test_a_trial_claimed_during_the_wait_is_left_to_its_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ms, "UNCLAIMED_S", 1.0)
    study = _study(tmp_path)
    fresh = _running(study, None)
    # a live worker (here a thread on the same storage) records itself while we wait
    worker = threading.Timer(
        0.2, study._storage.set_trial_user_attr, (fresh, ms.WORKER_ATTR, ms.worker_id())
    )
    worker.start()
    try:
        assert ms.release_dead_trials(study) == 0
    finally:
        worker.join()
    assert _state(study, fresh) == TrialState.RUNNING
