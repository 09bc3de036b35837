"""``MIPRO``: instruction proposals x demo sets, searched with optuna's TPE over minibatches.

1. Candidates (checkpointed in the run directory, computed once even with several
   workers): demo sets (zero-shot, labeled-only, then bootstrapped on seeded shuffles of the
   training set) and instruction candidates per predictor, written by a separate
   ``prompt_lm`` from a data summary, the program's structure and bootstrapped demos.
2. Search: each trial picks (instruction, demo set) per predictor with a TPE sampler and
   scores that program on a seeded minibatch of the valset. The best candidate by mean
   minibatch score is scored on the full valset every ``full_eval_steps`` trials and at the
   end; the best fully scored program wins.

The study lives in optuna storage (``sqlite:///<run_dir>/study.db`` by default, or any
optuna storage URL), named from the run's identity: a killed run resumes where it stopped
(completed trials are kept; a trial cut off by the kill is drawn again in the same slot, so
the result matches an uninterrupted run) and several worker processes can share one study.
With a database URL the run's checkpoints live there as well (``shared_store``), so the
workers may run on different machines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import lmforge as lf
from lmforge.errors import MissingExtraError, UsageError

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .candidates import CandidateSpace, build_space, data_summary
from .proposer import as_lm
from .run import Run, fingerprint

__all__ = ["AUTO", "MIPRO", "auto_plan"]

#: Candidates per predictor for each ``auto`` level (instructions and demo sets each).
AUTO: dict[str, int] = {"light": 6, "medium": 12, "heavy": 18}


def auto_plan(level: str, num_predictors: int) -> dict[str, int]:
    """Instruction candidates, demo sets and trials for an ``auto`` level.

    Trials grow with the number of choices: ``max(2 * vars * log2(n), 1.5 * n)`` where
    ``vars`` is two per predictor (instruction and demo set) and ``n`` the candidates.
    """
    if level not in AUTO:
        raise UsageError(f"MIPRO(auto={level!r}) is not a level; use one of {', '.join(AUTO)}")
    n = AUTO[level]
    variables = 2 * num_predictors
    trials = int(max(2 * variables * math.log2(n), 1.5 * n))
    return {"num_instruction_candidates": n, "num_demo_sets": n, "num_trials": trials}


@dataclasses.dataclass(eq=False, repr=False)
class MIPRO(Optimizer):
    """Search instructions and demo sets jointly (MIPROv2-style) with optuna's TPE sampler.

    Args:
        auto: ``"light"``, ``"medium"`` or ``"heavy"`` sets candidates and trials (default
            ``"light"`` unless ``num_trials`` is given).
        num_trials: search trials (instead of ``auto``; then 5 instruction candidates and 5
            demo sets unless given).
        minibatch_size: valset examples scored per trial (the full valset when smaller).
            Without a valset, candidates are scored on the trainset.
        num_instruction_candidates: instructions per predictor, the original included.
        num_demo_sets: demo sets, zero-shot and labeled-only included.
        max_bootstrapped_demos / max_labeled_demos: demos per bootstrapped set.
        full_eval_steps: score the best candidate on the full valset every this many trials.
        prompt_lm: the model that writes instructions, an ``lf.LM`` or a model name
            (default: the task model).
        storage: an optuna storage URL (default: SQLite in the run directory; in memory
            without one). Workers sharing a storage and run directory share the study. A
            database URL (``postgresql://user@host/db``) holds the checkpoints too
            (candidates, demos, evaluations): workers on machines with no shared
            filesystem share the run, and each returns the same program.
    """

    name = "mipro"

    auto: str | None = None
    _: dataclasses.KW_ONLY
    num_trials: int | None = setting(None, least=1)
    minibatch_size: int = setting(25, least=1)
    num_instruction_candidates: int | None = setting(None, least=1)
    num_demo_sets: int | None = setting(None, least=1)
    max_bootstrapped_demos: int = setting(4, least=0)
    max_labeled_demos: int = setting(4, least=0)
    full_eval_steps: int = setting(5, least=1)
    prompt_lm: lf.LM | str | None = setting(None, record="prompt_model", convert=as_lm)  # noqa: RUF009
    storage: str | None = setting(None, record=False)  # where, not what: not in the identity

    def __post_init__(self) -> None:
        if self.auto is not None and self.num_trials is not None:
            raise UsageError("give MIPRO either auto=... or num_trials=..., not both")
        if self.num_trials is None and self.auto is None:
            self.auto = "light"
        if self.auto is not None and self.auto not in AUTO:
            raise UsageError(
                f"MIPRO(auto={self.auto!r}) is not a level; use one of {', '.join(AUTO)}"
            )
        super().__post_init__()

    def plan(self, num_predictors: int) -> dict[str, int]:
        """The resolved trial count, instruction candidates and demo sets."""
        base = (
            auto_plan(self.auto, num_predictors)
            if self.auto is not None
            else {
                "num_instruction_candidates": 5,
                "num_demo_sets": 5,
                "num_trials": self.num_trials or 1,
            }
        )
        if self.num_instruction_candidates is not None:
            base["num_instruction_candidates"] = self.num_instruction_candidates
        if self.num_demo_sets is not None:
            base["num_demo_sets"] = self.num_demo_sets
        return base

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        steps = len(program.predictors())
        plan = self.plan(steps)
        val = len(valset) if valset else len(trainset)
        batch = min(self.minibatch_size, val)
        proposals = 1 + steps * (plan["num_instruction_candidates"] - 1)
        per_run = lm_calls_per_run(program)
        bootstraps = max(0, plan["num_demo_sets"] - 2) * len(trainset) * per_run
        trials = plan["num_trials"] * batch * per_run
        full = 0
        if val > batch:
            full = (2 + plan["num_trials"] // self.full_eval_steps) * val * per_run
        return proposals + bootstraps + trials + full

    # -- the search -------------------------------------------------------------------------

    def _compile(self, run: Run) -> lf.Module:
        _require_optuna()
        from . import mipro_search

        baseline = run.student.deepcopy()
        run.set_fallback(baseline)
        plan = self.plan(len(baseline.predictors()))
        prompt_lm = as_lm(self.prompt_lm)  # already an LM (converted when built)
        # Workers sharing the run build the candidates once: the others replay its steps.
        with run.store.exclusive("candidates"):
            run.progress.phase("summarising data")
            summary = data_summary(run, prompt_lm)
            run.progress.phase("building candidates")
            space = build_space(
                run,
                baseline,
                summary=summary,
                prompt_lm=prompt_lm,
                num_instructions=plan["num_instruction_candidates"],
                num_demo_sets=plan["num_demo_sets"],
                max_bootstrapped=self.max_bootstrapped_demos,
                max_labeled=self.max_labeled_demos,
            )
        search = mipro_search.Search(
            run,
            baseline,
            space,
            num_trials=plan["num_trials"],
            minibatch_size=self.minibatch_size,
            full_eval_steps=self.full_eval_steps,
            storage=self.storage,
            study_name=self._study_name(run, space),
        )
        return search.execute()

    @staticmethod
    def _study_name(run: Run, space: CandidateSpace) -> str:
        return f"lmforge-mipro-{fingerprint(run.store.identity, space.digest())[:16]}"


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise MissingExtraError("optuna", "optimize", "MIPRO's trial search") from None
