"""Optuna plumbing for MIPRO: storage, a replayable TPE sampler and dead-worker trials.

Imported only when a search runs (optuna is an optional dependency).

Replayable sampling: trial parameters are drawn by a TPE sampler seeded from the run's seed
and the trial's *slot* (how many trials had completed, or were running in other workers,
when it started). With one worker,
a run that is killed and resumed therefore draws exactly the parameters an uninterrupted
run would have drawn: a trial cut off by the kill is simply drawn again in the same slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from lmforge.errors import MissingExtraError, UsageError

from .shared_store import database_url

try:
    import optuna
    from optuna.samplers import BaseSampler, TPESampler
    from optuna.trial import FrozenTrial, TrialState
except ImportError:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("optuna", "optimize", "MIPRO's trial search") from None

__all__ = [
    "WORKER_ATTR",
    "SlotSampler",
    "completed_trials",
    "open_study",
    "quiet_optuna",
    "release_dead_trials",
    "worker_id",
]

WORKER_ATTR = "lmforge_worker"
SLOT_ATTR = "lmforge_slot"
HEARTBEAT_S = 20
GRACE_S = 60
# a live worker claims a new trial within milliseconds; unclaimed for this long means dead
UNCLAIMED_S = 5.0


class SlotSampler(BaseSampler):
    """TPE whose randomness depends only on (seed, slot), not on what ran before it in
    this process; see the module docstring."""

    def __init__(self, seed: int, *, n_startup_trials: int = 10) -> None:
        self._seed = seed
        self._n_startup_trials = n_startup_trials
        self._per_trial: dict[int, tuple[int, TPESampler]] = {}
        self._lock = threading.Lock()

    def _sampler(self, study: optuna.Study, trial: FrozenTrial) -> TPESampler:
        with self._lock:
            entry = self._per_trial.get(trial.number)
        if entry is None:
            self.before_trial(study, trial)
            with self._lock:
                entry = self._per_trial[trial.number]
        return entry[1]

    def slot(self, number: int) -> int:
        """The slot of a trial started by this sampler."""
        with self._lock:
            return self._per_trial[number][0]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Completed trials plus trials other workers are running now: a lone worker gets
        # consecutive slots; concurrent workers get distinct ones (distinct draws).
        busy = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        slot = sum(1 for t in busy if t.number != trial.number)
        digest = hashlib.sha256(f"{self._seed}:{slot}".encode()).hexdigest()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate TPE is marked experimental
            sampler = TPESampler(
                seed=int(digest[:8], 16), multivariate=True, n_startup_trials=self._n_startup_trials
            )
        with self._lock:
            self._per_trial[trial.number] = (slot, sampler)
        sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, Any]:
        return self._sampler(study, trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self._sampler(study, trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._sampler(study, trial).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any
    ) -> None:
        with self._lock:
            entry = self._per_trial.pop(trial.number, None)
        if entry is not None:
            entry[1].after_trial(study, trial, state, values)


def open_study(url: str | None, name: str, sampler: BaseSampler) -> optuna.Study:
    """Create or load the study ``name`` in the storage at ``url`` (maximising); with no
    URL the study lives in memory and ends with the process."""
    if url is None:
        return optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            study_name=name,
            direction="maximize",
            sampler=sampler,
        )
    url = database_url(url)
    kwargs: dict[str, Any] = {}
    lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if url.startswith("sqlite:"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            from filelock import FileLock

            # workers starting together must not both create the schema
            lock = FileLock(f"{path}.lock")
        # several worker processes may share one SQLite file: wait for locks instead of failing
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    with lock:
        for attempt in range(3):
            try:
                return _open(url, name, sampler, kwargs)
            except UsageError:
                raise
            except Exception as exc:  # SQLAlchemy raises many types (bad URL, schema race)
                if attempt == 2:
                    reason = f"{type(exc).__name__}: {_first_line(exc)}"
                    raise UsageError(f"cannot open optuna storage {url!r}: {reason}") from None
                time.sleep(0.5 * (attempt + 1))  # another worker may be creating the schema
    raise AssertionError("unreachable")


def _open(url: str, name: str, sampler: BaseSampler, kwargs: dict[str, Any]) -> optuna.Study:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat options are marked experimental
            storage = optuna.storages.RDBStorage(
                url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **kwargs
            )
    except (ImportError, ModuleNotFoundError) as exc:
        raise UsageError(
            f"optuna storage {url!r} needs a database driver that is missing ({exc})"
        ) from None
    return optuna.create_study(
        storage=storage, study_name=name, direction="maximize", sampler=sampler, load_if_exists=True
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:300]


def worker_id() -> dict[str, Any]:
    """This process, as recorded on the trials it runs."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def release_dead_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker process on this host is gone (killed runs).

    A worker records itself on a trial a moment after optuna creates it; a trial still
    without an owner once that moment is long past was created by a worker killed in
    between, and is failed too (waiting out at most ``UNCLAIMED_S`` for young ones).
    Workers on other hosts are covered by optuna's heartbeat (their trials fail after
    the grace period). Returns how many trials were released.
    """
    here = socket.gethostname()
    released = 0
    while True:
        youngest_unclaimed: float | None = None
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(WORKER_ATTR)
            if owner is None:
                started = trial.datetime_start or datetime.now()
                age = (datetime.now() - started).total_seconds()
                if age < UNCLAIMED_S:
                    youngest_unclaimed = min(age, youngest_unclaimed or age)
                    continue
            elif owner.get("host") != here or _alive(int(owner.get("pid", -1))):
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker finished or released it first
                continue
            released += 1
        if youngest_unclaimed is None:
            return released
        time.sleep(UNCLAIMED_S - youngest_unclaimed + 0.1)


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials in slot order (trials from this sampler carry their slot)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (int(t.user_attrs.get(SLOT_ATTR, t.number)), t.number))


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence optuna's per-trial logging for the block (restored afterwards): lmforge
    reports progress itself, and a trial stopped by a spent budget or an interrupt is not
    an error worth a traceback (the exception itself still propagates)."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
