"""``LabeledFewShot``: use k labeled training examples as every predictor's demos."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import lmforge as lf

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .run import Run, jsonable

__all__ = ["LabeledFewShot", "labeled_demos"]


def labeled_demos(
    examples: Sequence[lf.Example], k: int, rng: random.Random | None = None
) -> list[dict[str, Any]]:
    """Up to ``k`` examples as demo dicts: a seeded sample when ``rng`` is given, else the
    first ``k`` in order."""
    k = min(k, len(examples))
    chosen = rng.sample(list(examples), k) if rng is not None else list(examples)[:k]
    return [jsonable(example.to_dict()) for example in chosen]


@dataclasses.dataclass(eq=False, repr=False)
class LabeledFewShot(Optimizer):
    """Put ``k`` training examples (sampled with the run's seed) in every predictor's demos.

    Makes no LM calls (other than scoring the result on the valset, when one is given).
    Demos hold the examples' inputs and labels, so for multi-step programs only the steps
    whose fields the labels cover can show them.
    """

    name = "labeled"

    k: int = setting(16, least=0)
    _: dataclasses.KW_ONLY
    sample: bool = True

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        return len(valset or ()) * lm_calls_per_run(program)

    def _compile(self, run: Run) -> lf.Module:
        program = run.student.reset_copy()
        demos = labeled_demos(run.trainset, self.k, run.rng("labeled") if self.sample else None)
        for predictor in program.predictors():
            predictor.demos = demos
        return program
