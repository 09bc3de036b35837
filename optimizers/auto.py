"""``AutoFewShot``: pick a few-shot strategy from the data and the model.

``lmforge compile`` uses it when no ``--optimizer`` is given. Which strategies are worth
trying depends on the data:

* a training set of at most ``k`` rows fits in one prompt: every row becomes a demo
  (labeled, class-balanced for closed outputs; no search);
* otherwise these are compiled, named by kind and demo count: **labeled** with ``k`` and
  with ``2k`` demos (class-balanced and interleaved for a closed output), **knn** (the
  ``k / 2`` training rows nearest each input, when the retrieval extra is installed) and
  **bootstrap** (demos from traces the program got right, topped up with labeled rows to
  ``k``);

and which one wins depends on the model, so they are scored on held-out rows: the dev
split, or, without one, a seeded ``holdout`` share of the training set (the winner is
then compiled again on the whole training set), and, with them, the training rows that
strategy's program never shows (up to ``unseen``; :func:`lmforge.lights.unseen_rows`).
Those rows matter: a dev split of 30 rows chose bootstrapped demos at 93% that scored 63%
on test, while 30 dev rows and 44-52 unseen training rows chose 16 labeled demos (82% on
test). kNN programs show any training row, so they are scored on the held-out rows alone.
Label-scoring predictors are scored calibrated (the optimizer's ``calibration``), as they
will be served. The report lists every strategy's score and says why the chosen one won
(``artifact_meta["strategy"]``).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from collections.abc import Sequence
from typing import Any

import lmforge as lf

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .bootstrap import BootstrapFewShot
from .knn import KNNFewShot
from .labeled import LabeledFewShot
from .run import Run

__all__ = ["AutoFewShot"]

#: The fewest held-out training rows worth choosing a strategy on.
MIN_HOLDOUT = 8


@dataclasses.dataclass(eq=False, repr=False)
class AutoFewShot(Optimizer):
    """Compile with whichever few-shot strategy scores best on held-out rows.

    Args:
        k: demos per prompt (labeled also tries ``2k``; the neighbours of knn are
            ``k // 2``, at least 2: per-input demos need fewer).
        max_bootstrapped_demos: of the ``k`` bootstrap demos, at most this many from
            traces.
        holdout: without a dev split, the share of the training set held out to choose
            the strategy, when that holds at least 8 rows and leaves more than ``k`` to
            compile on; else labeled demos (``k``) are used without a choice.
        unseen: at most this many of the training rows a strategy's program does not
            show are scored with the held-out rows (a seeded sample when there are more;
            0: the held-out rows alone).
    """

    name = "auto"

    k: int = setting(8, least=1)
    _: dataclasses.KW_ONLY
    max_bootstrapped_demos: int = setting(4, least=0)
    holdout: float = 0.25
    unseen: int = setting(100, least=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.holdout < 1:
            raise lf.UsageError(
                f"AutoFewShot(holdout=...) must be between 0 and 1, not {self.holdout!r}"
            )

    def strategies(self, trainset: Sequence[lf.Example]) -> dict[str, Optimizer]:
        """The strategies worth trying on ``trainset``, by name."""
        options: dict[str, Any] = {"calibration": self.calibration, "max_errors": self.max_errors}
        n = len(trainset)
        if n <= self.k:
            return {f"labeled-{n}": LabeledFewShot(k=n, **options)}
        # Cheapest first: ties go to the strategy tried first.
        tried: dict[str, Optimizer] = {f"labeled-{self.k}": LabeledFewShot(k=self.k, **options)}
        more = min(2 * self.k, n)
        tried[f"labeled-{more}"] = LabeledFewShot(k=more, **options)
        if importlib.util.find_spec("bm25s") is not None:
            near = max(2, self.k // 2)
            tried[f"knn-{near}"] = KNNFewShot(k=near, **options)
        tried[f"bootstrap-{self.k}"] = BootstrapFewShot(
            max_bootstrapped_demos=min(self.max_bootstrapped_demos, self.k),
            max_labeled_demos=self.k,
            **options,
        )
        return tried

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        tried = self.strategies(trainset)
        held = len(valset) if valset else self._held_out_size(len(trainset))
        # Each strategy is compiled (on the whole training set at most) and scored on the
        # held-out rows and its unseen training rows; without a dev split the winner is
        # compiled once more.
        compiles = sum(s.estimate_calls(program, trainset, None) for s in tried.values())
        rows = held + min(self.unseen, len(trainset)) if held else 0
        scoring = len(tried) * rows * lm_calls_per_run(program) if len(tried) > 1 else 0
        return compiles * (1 if valset or not held else 2) + scoring

    def _held_out_size(self, n: int) -> int:
        size = round(n * self.holdout)
        return size if size >= MIN_HOLDOUT and n - size > self.k else 0

    def _compile(self, run: Run) -> lf.Module:
        tried = self.strategies(run.trainset)
        if len(tried) == 1:
            (name,) = tried
            return self._decided(
                run,
                name,
                tried[name],
                f"{len(run.trainset)} training rows fit in one prompt (k={self.k})",
                {},
            )
        if run.valset:
            choose_on, fit, split = run.valset, run.trainset, "dev"
        else:
            size = self._held_out_size(len(run.trainset))
            if not size:
                name = next(iter(tried))  # labeled, k demos
                why = (
                    f"no dev split and {len(run.trainset)} training rows are too few to "
                    "hold some out: labeled demos (no LM calls to choose)"
                )
                return self._decided(run, name, tried[name], why, {})
            rows = list(run.trainset)
            run.rng("auto", "holdout").shuffle(rows)
            choose_on, fit, split = rows[:size], rows[size:], f"{size} held-out training rows"
        sub = copy.copy(run)
        sub.trainset, sub.valset = list(fit), list(choose_on)
        scores: dict[str, float] = {}
        programs: dict[str, lf.Module] = {}
        counted: dict[str, int] = {}
        run.progress.phase("strategies", total=len(tried))
        for name, strategy in tried.items():
            try:
                program = strategy._compile(sub)
            except lf.UsageError as exc:  # e.g. kNN with no row holding every field
                run.note(f"auto: {name} skipped: {exc}")
                run.progress.advance()
                continue
            scored = run.evaluate(program, choose_on, label=f"strategy {name}")
            unseen = self._unseen(run, name, program, fit)
            total, count = scored.score * scored.n, scored.n
            if unseen:
                more = run.evaluate(program, unseen, label=f"strategy {name} (unseen train)")
                total, count = total + more.score * more.n, count + more.n
            scores[name], programs[name], counted[name] = total / count, program, count
            if run.valset:  # the program itself is a candidate only when compiled on all of train
                run.add_candidate(program, scored.score, kind=name, failures=scored.failures)
            run.add_trial(scores[name], kind="full", label=name)
            run.progress.advance()
        if not scores:
            raise lf.UsageError("auto: no few-shot strategy could compile this program (see above)")
        # Ties go to the cheaper strategy (the order tried).
        name = max(scores, key=lambda n: (scores[n], -list(tried).index(n)))
        ranked = ", ".join(f"{n} {100 * s:.1f}% ({counted[n]} rows)" for n, s in scores.items())
        pooled = any(n > len(choose_on) for n in counted.values())
        rows_used = f"{split} and the training rows each does not show" if pooled else split
        why = f"best on {rows_used}: {ranked}"
        if run.valset:
            return self._decided(run, name, None, why, scores, programs[name])
        return self._decided(run, name, tried[name], why, scores)

    def _unseen(
        self, run: Run, name: str, program: lf.Module, fit: Sequence[lf.Example]
    ) -> list[lf.Example]:
        """Up to ``unseen`` rows of ``fit`` that ``program`` never shows (seeded sample)."""
        from lmforge.lights import unseen_rows

        rows = unseen_rows(program, fit)
        if len(rows) > self.unseen:
            run.rng("auto", "unseen", name).shuffle(rows)
            rows = rows[: self.unseen]
        return rows

    def _decided(
        self,
        run: Run,
        name: str,
        strategy: Optimizer | None,
        why: str,
        scores: dict[str, float],
        program: lf.Module | None = None,
    ) -> lf.Module:
        """Record the choice (``run.strategy``) and return the chosen program, compiled on
        the whole training set when ``program`` is not given."""
        run.strategy = {"chosen": name, "why": why, "scores": scores}
        run.note(f"auto: {name} ({why})")
        if program is None:
            assert strategy is not None
            program = strategy._compile(run)
        return program
