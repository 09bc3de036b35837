"""Releasing trials left RUNNING by killed workers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
# study.ask() on a storage with a heartbeat warns; the workers under test use one
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")

from lmforge.optimizers import mipro_study as ms  # noqa: E402
from optuna.trial import TrialState  # noqa: E402


def _study(tmp_path: Path) -> optuna.Study:
    return ms.open_study(f"sqlite:///{tmp_path / 'study.db'}", "s", ms.SlotSampler(0))


def _running(study: optuna.Study, owner: dict[str, object] | None) -> optuna.Trial:
    trial = study.ask()
    if owner is not None:
        trial.set_user_attr(ms.WORKER_ATTR, owner)
    return trial


def _state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    return next(t.state for t in study.get_trials() if t.number == trial.number)


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
    worker = threading.Timer(0.2, fresh.set_user_attr, (ms.WORKER_ATTR, ms.worker_id()))
    worker.start()
    try:
        assert ms.release_dead_trials(study) == 0
    finally:
        worker.join()
    assert _state(study, fresh) == TrialState.RUNNING


def test_a_released_trial_is_drawn_again_by_the_next_worker(tmp_path: Path) -> None:
    """A resumed run continues a study through optuna's public API only: the killed
    worker's trial is failed and its slot is drawn again, with the same parameters."""
    study = _study(tmp_path)
    first = study.ask()
    drawn = first.suggest_int("x", 0, 1000)
    first.set_user_attr(ms.WORKER_ATTR, {"host": ms.worker_id()["host"], "pid": _dead_pid()})
    resumed = _study(tmp_path)  # the same storage and name, as a resumed run opens it
    assert ms.release_dead_trials(resumed) == 1
    again = resumed.ask()
    assert again.number == first.number + 1
    assert again.suggest_int("x", 0, 1000) == drawn  # slot 0 again: same draw
    resumed.tell(again, 1.0)
    assert [t.state for t in resumed.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]


def test_the_mipro_modules_use_no_private_optuna_attributes() -> None:
    """``study._storage`` / ``trial._trial_id`` change between optuna releases; resume
    must not depend on them."""
    import re

    root = Path(ms.__file__).parent
    for name in ("mipro.py", "mipro_search.py", "mipro_study.py"):
        source = (root / name).read_text()
        private = re.findall(r"\b(?:study|trial|storage|optuna\.\w+)\._[a-z]\w*", source)
        assert private == [], (name, private)
