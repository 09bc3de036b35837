"""``LabeledFewShot``: use k labeled training examples as every predictor's demos."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import lmforge as lf
from lmforge.errors import UsageError

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


class LabeledFewShot(Optimizer):
    """Put ``k`` training examples (sampled with the run's seed) in every predictor's demos.

    Makes no LM calls (other than scoring the result on the valset, when one is given).
    Demos hold the examples' inputs and labels, so for multi-step programs only the steps
    whose fields the labels cover can show them.
    """

    name = "labeled"

    def __init__(self, k: int = 16, *, sample: bool = True) -> None:
        if k < 0:
            raise UsageError("LabeledFewShot(k=...) must be 0 or more")
        self.k = k
        self.sample = sample

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "sample": self.sample}

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
