"""MIPRO's trial loop over an optuna study (imported only when a search runs).

Which candidates get scored on the full valset is a pure function of the completed trials
(the best by mean minibatch score after every ``full_eval_steps`` trials, and at the end),
and each full evaluation is a checkpointed run step. A resumed run therefore catches up on
exactly the evaluations an uninterrupted run would have made, and returns the same program.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import lmforge as lf

from . import mipro_study as ms
from .candidates import CandidateSpace, apply_choice
from .run import Run

__all__ = ["Search"]

Choice = dict[str, tuple[int, int]]
# How often a worker with no trial left to start looks at the study again.
_WAIT_S = 0.5


class Search:
    """One worker's part of a MIPRO study; :meth:`execute` returns the chosen program."""

    def __init__(
        self,
        run: Run,
        baseline: lf.Module,
        space: CandidateSpace,
        *,
        num_trials: int,
        minibatch_size: int,
        full_eval_steps: int,
        storage: str | None,
        study_name: str,
    ) -> None:
        self.run = run
        self.baseline = baseline
        self.space = space
        self.num_trials = num_trials
        self.full_eval_steps = full_eval_steps
        self.valset = list(run.valset if run.valset else run.trainset)
        self.batch_size = min(minibatch_size, len(self.valset))
        self.minibatched = self.batch_size < len(self.valset)
        self.names = [name for name, _ in baseline.named_predictors()]
        self.storage_url = storage or _default_storage(run)
        self.study_name = study_name
        # Checkpoints in a database every worker reads: full evaluations wait for the
        # final trial set and every worker replays every trial, so whichever worker
        # finishes returns the same program.
        self.shared = run.store.shared
        self._full: dict[str, float] = {}
        self._ran: set[int] = set()
        self._batches: dict[int, list[lf.Example]] = {}

    # -- entry point --------------------------------------------------------------------------

    def execute(self) -> lf.Module:
        run = self.run
        if self.minibatched:
            baseline = run.evaluate(self.baseline, self.valset, label="baseline (full)")
            run.add_candidate(self.baseline, baseline.score, kind="baseline")
        sampler = ms.SlotSampler(run.seed, n_startup_trials=max(2, min(10, self.num_trials // 3)))
        with ms.quiet_optuna():
            study = ms.open_study(self.storage_url, self.study_name, sampler)
            try:
                self._search(study, sampler)
                with run.store.exclusive("full-evaluations"):
                    self._catch_up(study, final=True)
                self._replay(ms.completed_trials(study))
            finally:
                # also when a budget stop cut the search short: the report shows the trials
                # and, with full-valset trials, the best of them is returned
                self._record(ms.completed_trials(study))
        best = run.best
        return best.program if best is not None else self.baseline

    # -- trials -------------------------------------------------------------------------------

    def _search(self, study: Any, sampler: ms.SlotSampler) -> None:
        """Run trials until the study holds ``num_trials`` complete ones, whichever
        workers complete them; a worker whose trials are all taken waits for the running
        ones (and takes over those of a worker that died)."""
        import optuna

        run = self.run
        released = ms.release_dead_trials(study)
        done = len(ms.completed_trials(study))
        if done or released:
            run.note(f"resuming study {self.study_name}: {done} of {self.num_trials} trial(s) done")
        self._enqueue_baseline(study)
        if not self.shared:
            self._catch_up(study)
        run.progress.phase("trials", total=self.num_trials)
        run.progress.advance(min(done, self.num_trials))
        running = (optuna.trial.TrialState.RUNNING,)
        while True:
            done = len(ms.completed_trials(study))
            if done >= self.num_trials:
                return
            if done + len(study.get_trials(deepcopy=False, states=running)) >= self.num_trials:
                time.sleep(_WAIT_S)
                optuna.storages.fail_stale_trials(study)  # workers gone on other hosts
                ms.release_dead_trials(study)  # and on this one
                continue
            study.optimize(
                lambda trial: self._objective(trial, sampler),
                n_trials=1,
                catch=(),
                callbacks=[lambda study, trial: self._after_trial(study, trial)],
            )

    def _objective(self, trial: Any, sampler: ms.SlotSampler) -> float:
        import optuna

        # Workers starting trials at once may overshoot num_trials: the trials numbered
        # after the first num_trials live ones step back (pruned: never complete).
        live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        ahead = trial.study.get_trials(deepcopy=False, states=live)
        if sum(1 for t in ahead if t.number < trial.number) >= self.num_trials:
            raise optuna.TrialPruned()
        slot = sampler.slot(trial.number)
        trial.set_user_attr(ms.WORKER_ATTR, ms.worker_id())
        trial.set_user_attr(ms.SLOT_ATTR, slot)
        choice: Choice = {}
        for name in self.names:
            instruction = trial.suggest_categorical(
                f"{name}.instruction", list(range(len(self.space.instructions[name])))
            )
            demo_set = trial.suggest_categorical(
                f"{name}.demos", list(range(len(self.space.demo_sets)))
            )
            choice[name] = (int(instruction), int(demo_set))
        program = apply_choice(self.baseline, self.space, choice)
        label = f"trial {slot + 1}/{self.num_trials}"
        score = self.run.evaluate(program, self._minibatch(slot), label=label).score
        self._ran.add(trial.number)
        return score

    def _replay(self, completed: list[Any]) -> None:
        """Restore the evaluations of trials completed by earlier runs from their checkpoints,
        so the run's usage counts them exactly as an uninterrupted run would. Trials of
        workers on other hosts are skipped unless the checkpoints are in a shared database
        (elsewhere they live in those hosts' run directories)."""
        here = ms.worker_id()["host"]
        for trial in completed:
            owner = trial.user_attrs.get(ms.WORKER_ATTR) or {}
            elsewhere = owner.get("host", here) != here and not self.shared
            if trial.number in self._ran or elsewhere:
                continue
            slot = int(trial.user_attrs.get(ms.SLOT_ATTR, trial.number))
            program = apply_choice(self.baseline, self.space, _choice(trial.params))
            self.run.evaluate(program, self._minibatch(slot), label="restoring trials")

    def _minibatch(self, slot: int) -> list[lf.Example]:
        """The seeded minibatch of a slot (the same examples every time it is asked for)."""
        if not self.minibatched:
            return self.valset
        batch = self._batches.get(slot)
        if batch is None:
            rng = self.run.rng("mipro", "minibatch", slot)
            picked = sorted(rng.sample(range(len(self.valset)), self.batch_size))
            batch = self._batches[slot] = [self.valset[i] for i in picked]
        return batch

    def _after_trial(self, study: Any, trial: Any) -> None:
        import optuna

        if trial.state != optuna.trial.TrialState.COMPLETE:
            return
        self.run.progress.advance(1)
        if not self.shared:
            self._catch_up(study)

    def _enqueue_baseline(self, study: Any) -> None:
        """The first trial scores the original program (instruction 0, demo set 0)."""
        import optuna

        params = {key: 0 for name in self.names for key in (f"{name}.instruction", f"{name}.demos")}
        alive = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.RUNNING,
            optuna.trial.TrialState.WAITING,
        )
        for trial in study.get_trials(deepcopy=False, states=alive):
            if trial.params == params or trial.system_attrs.get("fixed_params") == params:
                return
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            study.enqueue_trial(params)

    # -- full evaluations ---------------------------------------------------------------------

    def _catch_up(self, study: Any, *, final: bool = False) -> None:
        """Fully score the best-by-mean candidate at every checkpoint the completed trials
        have reached (and after the last trial when ``final``)."""
        if not self.minibatched:
            return
        completed = ms.completed_trials(study)
        points = list(range(self.full_eval_steps, len(completed) + 1, self.full_eval_steps))
        if final and completed and (not points or points[-1] != len(completed)):
            points.append(len(completed))
        for point in points:
            choice = _best_by_mean(completed[:point])
            if choice is not None:
                self._full_score(choice, point)

    def _full_score(self, choice: Choice, point: int) -> float:
        key = _key(choice)
        if key not in self._full:
            program = apply_choice(self.baseline, self.space, choice)
            result = self.run.evaluate(
                program, self.valset, label=f"full evaluation after {point} trial(s)"
            )
            self._full[key] = result.score
            self.run.add_candidate(
                program,
                result.score,
                kind="full",
                choice=self.space.describe(choice),
                after_trial=point,
            )
            self.run.add_trial(
                result.score, kind="full", trial=point, label=self.space.describe(choice)
            )
        return self._full[key]

    # -- report -------------------------------------------------------------------------------

    def _record(self, completed: list[Any]) -> None:
        """Minibatch trials into the run's trial list; when the valset is a single minibatch
        each trial is a full evaluation and its program a candidate."""
        seen: set[str] = set()
        for position, trial in enumerate(completed, start=1):
            choice = _choice(trial.params)
            label = self.space.describe(choice)
            kind = "minibatch" if self.minibatched else "full"
            self.run.add_trial(float(trial.value), kind=kind, trial=position, label=label)
            key = _key(choice)
            if not self.minibatched and key not in seen:
                seen.add(key)
                program = apply_choice(self.baseline, self.space, choice)
                self.run.add_candidate(
                    program, float(trial.value), kind="trial", choice=label, trial=position
                )


def _choice(params: Mapping[str, Any]) -> Choice:
    choice: dict[str, list[int]] = {}
    for key, value in params.items():
        name, _, part = key.rpartition(".")
        choice.setdefault(name, [0, 0])[0 if part == "instruction" else 1] = int(value)
    return {name: (pair[0], pair[1]) for name, pair in sorted(choice.items())}


def _key(choice: Mapping[str, tuple[int, int]]) -> str:
    return json.dumps({k: list(v) for k, v in sorted(choice.items())}, separators=(",", ":"))


def _best_by_mean(trials: list[Any]) -> Choice | None:
    """The choice with the highest mean minibatch score (ties: the one seen first)."""
    totals: dict[str, list[float]] = {}
    order: list[str] = []
    for trial in trials:
        key = _key(_choice(trial.params))
        if key not in totals:
            totals[key] = []
            order.append(key)
        totals[key].append(float(trial.value))
    if not order:
        return None
    best = max(order, key=lambda k: (sum(totals[k]) / len(totals[k]), -order.index(k)))
    return {name: (pair[0], pair[1]) for name, pair in json.loads(best).items()}


def _default_storage(run: Run) -> str | None:
    path = run.store.path("study.db")
    return f"sqlite:///{path}" if path is not None else None
