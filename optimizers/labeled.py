"""``LabeledFewShot``: use k labeled training examples as every predictor's demos."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import lmforge as lf
from lmforge.modules.demo_sets import balanced, closed_output

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .run import Run, jsonable

__all__ = ["LabeledFewShot", "labeled_demos"]


def labeled_demos(
    examples: Sequence[lf.Example],
    k: int,
    rng: random.Random | None = None,
    *,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``k`` examples as demo dicts: a seeded sample when ``rng`` is given, else the
    first ``k`` in order.

    With ``label`` (a closed output field, see :func:`lmforge.modules.demo_sets.closed_output`)
    the choice is class-balanced: round-robin over the labels, so every label is shown when
    ``k`` allows, and interleaved so labels take turns (seeded by ``rng`` too).
    """
    k = min(k, len(examples))
    if label is not None:
        rows = [jsonable(example.to_dict()) for example in examples]
        return balanced(rows, k, label, rng)
    chosen = rng.sample(list(examples), k) if rng is not None else list(examples)[:k]
    return [jsonable(example.to_dict()) for example in chosen]


def balance_label(predictor: lf.Predict, examples: Sequence[lf.Example]) -> str | None:
    """The field to balance ``predictor``'s labeled demos on: its closed output field, when
    the examples carry it; else ``None`` (open outputs are sampled as they come)."""
    label = closed_output(predictor.signature)
    if label is None or not any(label in example for example in examples):
        return None
    return label


@dataclasses.dataclass(eq=False, repr=False)
class LabeledFewShot(Optimizer):
    """Put ``k`` training examples (sampled with the run's seed) in every predictor's demos.

    Makes no LM calls (other than scoring the result on the valset, when one is given).
    Demos hold the examples' inputs and labels, so for multi-step programs only the steps
    whose fields the labels cover can show them.

    ``balanced`` (default on): for a predictor with a closed output (``Literal``, enum,
    ``bool``) the ``k`` demos are taken round-robin over its labels, so every label is seen
    when ``k`` allows, and ordered so that labels take turns (see
    :mod:`lmforge.modules.demo_sets`). A plain sample of ``k`` from skewed data shows a
    small model few labels, and it then rarely answers the others. Open outputs are
    sampled as before.
    """

    name = "labeled"

    k: int = setting(16, least=0)
    _: dataclasses.KW_ONLY
    sample: bool = True
    balanced: bool = True

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        return len(valset or ()) * lm_calls_per_run(program)

    def _compile(self, run: Run) -> lf.Module:
        program = run.student.reset_copy()
        for predictor in program.predictors():
            label = balance_label(predictor, run.trainset) if self.balanced else None
            # A fresh generator per predictor: predictors with the same label get the same demos.
            rng = run.rng("labeled") if self.sample else None
            predictor.demos = labeled_demos(run.trainset, self.k, rng, label=label)
        return program
