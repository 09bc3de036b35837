"""``KNNFewShot``: per-input demos, the training rows nearest to each input (BM25, or an
embedding function you name)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import lmforge as lf
from lmforge.modules._spec import callable_ref
from lmforge.modules.demo_sets import balanced as balanced_demos
from lmforge.modules.knn_demos import KNNDemos, Order

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .labeled import balance_label
from .run import Run, jsonable

__all__ = ["KNNFewShot"]


def _embedder_ref(value: Any) -> Any:
    # A function is recorded by its import path: the artifact re-imports it at load.
    return callable_ref(value) if callable(value) else value


@dataclasses.dataclass(eq=False, repr=False)
class KNNFewShot(Optimizer):
    """Give every predictor, for each call, the ``k`` training rows nearest to its inputs.

    The training set becomes each predictor's demo pool (saved in the artifact as JSON,
    with these settings) and a BM25 index over the predictor's input fields is built from
    it when the program is built or loaded (``pip install 'lmforge[retrieval]'``); each
    call ranks the pool against its inputs and shows the best ``k`` rows. Loaded and served
    programs therefore pick per-input demos too. Makes no LM calls other than scoring the
    result on the valset, when one is given.

    Args:
        k: demos per call.
        balanced: for a closed output (``Literal``, enum, ``bool``), take the nearest row of
            each label in turn rather than the plain ``k`` nearest (every label is shown
            when ``k`` allows). Off by default: the neighbours' labels are the signal.
        order: ``"interleave"`` (labels take turns, nearest first) or ``"nearest_last"``
            (the nearest row right before the input); see :mod:`lmforge.modules.demo_sets`.
        max_pool: at most this many training rows in the pool (a class-balanced, seeded
            choice when the training set is larger): the artifact holds them all.
        stemmer: the BM25 stemmer language (``None``: match words exactly).
        embedder: rank by cosine similarity under this embedding function (texts ->
            vectors; a module-level function or its ``"package.module:function"`` path)
            instead of BM25; see :class:`lmforge.modules.knn_demos.KNNDemos`.
    """

    name = "knn"

    k: int = setting(4, least=1)
    _: dataclasses.KW_ONLY
    balanced: bool = False
    order: str = setting("interleave", kind=str)
    max_pool: int = setting(1000, least=1)
    stemmer: str | None = setting("english", kind=str)
    embedder: Any = setting(None, kind=str, convert=_embedder_ref)  # noqa: RUF009 (a field)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in ("interleave", "nearest_last"):
            raise lf.UsageError(
                f"KNNFewShot order must be 'interleave' or 'nearest_last', got {self.order!r}"
            )

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        return len(valset or ()) * lm_calls_per_run(program)

    def _compile(self, run: Run) -> lf.Module:
        program = run.student.reset_copy()
        given = 0
        for predictor in program.predictors():
            fields = [f.name for f in predictor.signature.input_fields]
            outputs = [f.name for f in predictor.signature.output_fields]
            rows = [
                jsonable(example.to_dict())
                for example in run.trainset
                if all(name in example for name in (*fields, *outputs))
            ]
            if not rows:
                continue  # a step the labels do not cover keeps no demos
            label = balance_label(predictor, run.trainset)
            predictor.demo_selector = self._selector(run, rows, fields, label)
            given += 1
        if not given:
            names = sorted({f.name for p in program.predictors() for f in p.signature.fields})
            raise lf.UsageError(
                f"KNNFewShot found no training example with all the fields of a predictor "
                f"({', '.join(names)}); label the trainset with them"
            )
        return program

    def _selector(
        self, run: Run, rows: list[dict[str, Any]], fields: list[str], label: str | None
    ) -> KNNDemos:
        # Pool order is the fallback order (rows sharing no word with an input), so a
        # balanced, seeded order keeps that fallback balanced too.
        if label is not None:
            rows = balanced_demos(rows, min(self.max_pool, len(rows)), label, run.rng("knn"))
        else:
            rows = run.rng("knn").sample(rows, min(self.max_pool, len(rows)))
        order: Order = "nearest_last" if self.order == "nearest_last" else "interleave"
        return KNNDemos(
            rows,
            self.k,
            fields=fields,
            label=label,
            balanced=self.balanced and label is not None,
            order=order,
            stemmer=self.stemmer,
            embedder=self.embedder,
        )
