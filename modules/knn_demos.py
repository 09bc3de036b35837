"""``KNNDemos``: per-input demos, the pool rows nearest to each call's inputs.

Set as a predictor's ``demo_selector`` (``lf.KNNFewShot`` does it): for each call, the
inputs are matched against the pool with BM25 (:class:`~lmforge.modules.BM25Retriever`,
``pip install 'lmforge[retrieval]'``), or by cosine similarity under an embedding function
you name, and the ``k`` best rows become the call's demos. The index (or the pool's
vectors) is built once, when the selector is built or loaded, never per call. The pool and
the settings are saved in the artifact, so a loaded or served program selects the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

import lmforge as lf

from ._spec import resolve_callable
from .demo_sets import interleave, label_key, take_turns
from .retrieve import BM25Retriever

__all__ = ["KNNDemos", "Order"]

Order = Literal["interleave", "nearest_last"]
_ORDERS: tuple[str, ...] = get_args(Order)


class KNNDemos:
    """The ``k`` pool rows nearest to a call's inputs, as that call's demos.

    Args:
        pool: demo rows (dicts holding input and output fields), in fallback order: when
            fewer than ``k`` rows share a term with the input, the first unchosen rows of
            the pool fill the set.
        k: demos per call.
        fields: the input fields compared (their values joined as the BM25 query / document).
        label: the closed output field; with ``balanced``, and for ``order="interleave"``.
        balanced: pick round-robin over labels along the ranking (the nearest row of each
            label, labels in order of their nearest row), so every label is shown when
            ``k`` allows; otherwise the plain ``k`` nearest.
        order: ``"interleave"`` (labels take turns, nearest first, see
            :mod:`lmforge.modules.demo_sets`) or ``"nearest_last"`` (farthest first, the
            nearest row right before the input).
        stemmer / stopwords: as for :class:`~lmforge.modules.BM25Retriever`.
        embedder: instead of BM25, the import path (``"package.module:function"``) of a
            function mapping a list of texts to a list of vectors (an embedding model you
            have installed); rows are ranked by cosine similarity. It is re-imported when
            the artifact is loaded (from a trusted module: ``lf.load(...,
            trusted_modules=[...])``) and the pool is embedded then, once.
    """

    def __init__(
        self,
        pool: Iterable[Mapping[str, Any]],
        k: int = 4,
        *,
        fields: Sequence[str],
        label: str | None = None,
        balanced: bool = False,
        order: Order = "interleave",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        embedder: str | None = None,
    ) -> None:
        rows = list(pool)
        if not rows or not all(isinstance(row, Mapping) for row in rows):
            raise lf.UsageError("KNNDemos needs a non-empty pool of demo dicts")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise lf.UsageError(f"KNNDemos needs k >= 1, got {k!r}")
        names = [fields] if isinstance(fields, str) else list(fields)
        if not names or not all(isinstance(f, str) and f for f in names):
            raise lf.UsageError(f"KNNDemos needs fields=[input field names], got {fields!r}")
        if order not in _ORDERS:
            raise lf.UsageError(f"KNNDemos order must be one of {list(_ORDERS)}, got {order!r}")
        if balanced and label is None:
            raise lf.UsageError("KNNDemos(balanced=True) needs label= (the closed output field)")
        self.pool: tuple[dict[str, Any], ...] = tuple(dict(row) for row in rows)
        self.k = k
        self.fields = tuple(names)
        self.label = label
        self.balanced = bool(balanced)
        self.order: Order = order
        self.stemmer = stemmer
        self.stopwords = stopwords
        self.embedder = embedder
        # Label keys computed once: a balanced pick groups the whole ranked pool per call.
        self._keys = [label_key(row, label) for row in self.pool] if label is not None else []
        texts = [self._text(row) for row in self.pool]
        self._index: BM25Retriever | None = None
        self._vectors: list[list[float]] = []
        if embedder is None:
            #: the lmforge extras a program server needs to rebuild this selector
            self.extras: tuple[str, ...] = ("retrieval",)
            self._index = BM25Retriever(
                [{"text": text, "id": str(i)} for i, text in enumerate(texts)],
                stemmer=stemmer,
                stopwords=stopwords,
            )
        else:
            self.extras = ()
            self._embed = resolve_callable(
                embedder, what="embedder", hint="pass a module-level function's import path"
            )
            self._vectors = self._embedded(texts)

    def _embedded(self, texts: list[str]) -> list[list[float]]:
        """Unit vectors of ``texts`` from the embedder, checked."""
        vectors = list(self._embed(texts))
        if len(vectors) != len(texts):
            raise lf.UsageError(
                f"the embedder {self.embedder} returned {len(vectors)} vectors for "
                f"{len(texts)} texts; it must return one vector per text"
            )
        units = []
        for vector in vectors:
            values = [float(x) for x in vector]
            norm = math.sqrt(sum(x * x for x in values)) or 1.0
            units.append([x / norm for x in values])
        return units

    def _text(self, values: Mapping[str, Any]) -> str:
        return "\n".join(str(values.get(name, "")) for name in self.fields)

    def ranked(self, inputs: Mapping[str, Any], depth: int) -> list[int]:
        """Positions of up to ``depth`` pool rows, nearest first, topped up in pool order."""
        depth = min(depth, len(self.pool))
        if self._index is not None:
            order = [index for index, _ in self._index.rank(self._text(inputs), depth)]
        else:
            query = self._embedded([self._text(inputs)])[0]
            scores = [sum(a * b for a, b in zip(query, row, strict=False)) for row in self._vectors]
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:depth]
        if len(order) < depth:
            found = set(order)
            order += [i for i in range(len(self.pool)) if i not in found][: depth - len(order)]
        return order

    def select(self, inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """This call's demos for ``inputs``, in prompt order."""
        if self.balanced and self.label is not None:
            # The whole pool ranked (a few hundred rows is cheap), so every label can be
            # found: the nearest row of each label in turn, labels in order of their nearest.
            groups: dict[str, list[dict[str, Any]]] = {}
            for index in self.ranked(inputs, len(self.pool)):
                groups.setdefault(self._keys[index], []).append(self.pool[index])
            chosen = take_turns(list(groups.values()), self.k)
        else:
            chosen = [self.pool[index] for index in self.ranked(inputs, self.k)]
        if self.order == "nearest_last":
            return chosen[::-1]
        return interleave(chosen, self.label) if self.label is not None else chosen

    def spec_config(self) -> dict[str, Any]:
        return {
            "pool": [dict(row) for row in self.pool],
            "k": self.k,
            "fields": list(self.fields),
            "label": self.label,
            "balanced": self.balanced,
            "order": self.order,
            "stemmer": self.stemmer,
            "stopwords": self.stopwords,
            "embedder": self.embedder,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> KNNDemos:
        label = config.get("label")
        stemmer = config.get("stemmer", "english")
        stopwords = config.get("stopwords", "en")
        embedder = config.get("embedder")
        for name, value in (
            ("label", label),
            ("stemmer", stemmer),
            ("stopwords", stopwords),
            ("embedder", embedder),
        ):
            if value is not None and not isinstance(value, str):
                raise lf.UsageError(f"KNNDemos {name} must be a string or null, got {value!r}")
        return cls(
            config.get("pool") or [],
            config.get("k", 4),
            fields=config.get("fields") or [],
            label=label,
            balanced=bool(config.get("balanced", False)),
            order=config.get("order", "interleave"),
            stemmer=stemmer,
            stopwords=stopwords,
            embedder=embedder,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> KNNDemos:
        return self  # an immutable index: share it

    def __len__(self) -> int:
        return len(self.pool)

    def __repr__(self) -> str:
        return f"KNNDemos(k={self.k}, {len(self.pool)} rows, fields={list(self.fields)})"
