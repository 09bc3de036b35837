"""Retrieval: a small retriever protocol, the ``Retrieve`` module and an in-memory BM25
retriever (built on the ``bm25s`` library; ``pip install 'lmforge[retrieval]'``)."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lmforge as lf

from ._spec import import_object

__all__ = ["BM25Retriever", "Passage", "Retrieve", "Retriever"]


@dataclasses.dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved passage: its ``text``, a stable ``id``, the retriever's ``score`` and
    free ``metadata`` (title, source, ...)."""

    text: str
    id: str
    score: float = 0.0
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


@runtime_checkable
class Retriever(Protocol):
    """Anything with ``search(query, k) -> list[Passage]``, best first.

    A retriever may also define ``async asearch(query, k)`` (used by async calls) and
    ``spec_config()`` / ``from_spec_config(config)`` so programs using it can be saved and
    rebuilt without user code.
    """

    def search(self, query: str, k: int) -> list[Passage]: ...


class Retrieve(lf.Module):
    """Look up the ``k`` best passages for a query.

    Its signature is ``query: str -> passages: list[str]`` (names set by ``query=`` and
    ``output=``), so it chains with LM steps; the prediction also carries ``hits``, the
    full :class:`Passage` records (ids, scores, metadata). It makes no LM call and has no
    predictors to tune.
    """

    def __init__(
        self, retriever: Retriever, k: int = 3, *, query: str = "query", output: str = "passages"
    ) -> None:
        if not callable(getattr(retriever, "search", None)):
            raise lf.UsageError(
                f"{type(retriever).__name__} is not a retriever: it needs search(query, k)"
            )
        if k < 1:
            raise lf.UsageError("Retrieve needs k >= 1")
        if output == "hits" or query == output:
            raise lf.UsageError("Retrieve: output= must differ from query= and from 'hits'")
        self.retriever = retriever
        self.k = k
        self.query_field = query
        self.output_field = output
        self.signature = lf.Signature.parse(
            f"{query}: str -> {output}: list[str]",
            instructions="Find the passages most relevant to the query.",
        )

    def forward(self, **inputs: Any) -> lf.Prediction:
        query = self._query(inputs)
        return self._prediction(self.retriever.search(query, self.k))

    async def aforward(self, **inputs: Any) -> lf.Prediction:
        query = self._query(inputs)
        asearch = getattr(self.retriever, "asearch", None)
        if asearch is not None:
            hits = await asearch(query, self.k)
        else:
            import asyncio  # imported on first async use: plain calls never need it

            hits = await asyncio.to_thread(self.retriever.search, query, self.k)
        return self._prediction(hits)

    def _query(self, inputs: Mapping[str, Any]) -> str:
        if set(inputs) != {self.query_field}:
            raise lf.UsageError(
                f"Retrieve takes one input, {self.query_field}=...; got {sorted(inputs)}"
            )
        return str(inputs[self.query_field])

    def _prediction(self, hits: Iterable[Passage]) -> lf.Prediction:
        found = list(hits)[: self.k]
        return lf.Prediction({self.output_field: [p.text for p in found], "hits": found})

    def __deepcopy__(self, memo: dict[int, Any]) -> Retrieve:
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(self.__dict__)  # the retriever is a shared, read-only index
        return new

    # -- artifacts ----------------------------------------------------------------------

    def spec_config(self) -> dict[str, Any]:
        retriever = None
        if callable(getattr(self.retriever, "spec_config", None)):
            cls = type(self.retriever)
            retriever = {
                "type": f"{cls.__module__}:{cls.__qualname__}",
                "config": self.retriever.spec_config(),  # type: ignore[attr-defined]
            }
        return {
            "retriever": retriever,
            "k": self.k,
            "query": self.query_field,
            "output": self.output_field,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> Retrieve:
        spec = config.get("retriever")
        if not spec:
            raise lf.UsageError(
                "the retriever was not saved (it has no spec_config()); build the program with "
                "its retriever yourself and pass it: lf.load(path, program=...)"
            )
        retriever = _retriever_from_spec(spec)
        return cls(
            retriever,
            int(config.get("k", 3)),
            query=str(config.get("query", "query")),
            output=str(config.get("output", "passages")),
        )


def _retriever_from_spec(spec: Mapping[str, Any]) -> Retriever:
    # Retrievers are not Modules, but are recorded the same way (class path + config).
    cls = import_object(str(spec.get("type", "")), what="retriever")
    factory = getattr(cls, "from_spec_config", None)
    if not callable(factory):
        raise lf.UsageError(f"the saved retriever {spec.get('type')} has no from_spec_config()")
    return factory(dict(spec.get("config") or {}))  # type: ignore[no-any-return]


class BM25Retriever:
    """An in-memory BM25 index over passages (``bm25s``), for small and medium corpora.

    ``BM25Retriever(["text one", "text two"])``, ``BM25Retriever([Passage(...), ...])``,
    dicts with ``text`` / ``id`` / other keys (kept as metadata), or
    :meth:`from_jsonl`. A passage's ``metadata["title"]``, when present, is indexed with its
    text. Words are reduced to their stems (``stemmer="english"``, with PyStemmer; any
    Snowball language name, or ``None`` to match words exactly). Passages are saved inside
    artifacts, so a saved RAG program is self-contained.
    """

    #: the lmforge extras a program server needs to rebuild this retriever
    extras: tuple[str, ...] = ("retrieval",)

    def __init__(
        self,
        passages: Iterable[str | Passage | Mapping[str, Any]],
        *,
        stopwords: str | list[str] | None = "en",
        stemmer: str | None = "english",
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        bm25s, tokenizer_cls = _bm25s()
        self.passages: list[Passage] = [_as_passage(p, i) for i, p in enumerate(passages)]
        if not self.passages:
            raise lf.UsageError("BM25Retriever needs at least one passage")
        self.stopwords = stopwords
        self.stemmer = stemmer
        self.k1 = k1
        self.b = b
        self._lock = threading.Lock()
        self._tokenizer = tokenizer_cls(stopwords=stopwords or [], stemmer=_stemmer(stemmer))
        texts = [_indexed_text(p) for p in self.passages]
        tokens = self._tokenizer.tokenize(texts, show_progress=False, return_as="ids")
        self._index = bm25s.BM25(k1=k1, b=b)
        self._index.index(tokens, show_progress=False)

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        *,
        text_field: str = "text",
        id_field: str = "id",
        **options: Any,
    ) -> BM25Retriever:
        """Index a JSONL file with one passage object per line."""
        records = []
        source = Path(path)
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise lf.UsageError(f"{source}:{number}: not JSON ({exc})") from None
            if not isinstance(record, dict) or text_field not in record:
                raise lf.UsageError(f"{source}:{number}: expected an object with {text_field!r}")
            text = str(record.pop(text_field))
            pid = str(record.pop(id_field, number - 1))
            records.append(Passage(text=text, id=pid, metadata=record))
        return cls(records, **options)

    def search(self, query: str, k: int) -> list[Passage]:
        """The ``k`` passages scoring best for ``query``; passages sharing no term are left out."""
        return [
            dataclasses.replace(self.passages[index], score=score)
            for index, score in self.rank(query, k)
        ]

    def rank(self, query: str, k: int) -> list[tuple[int, float]]:
        """(position, score) of the ``k`` passages scoring best for ``query``, best first;
        passages sharing no term are left out (:meth:`search` without building passages)."""
        k = min(k, len(self.passages))
        with self._lock:
            tokens = self._tokenizer.tokenize(
                [query], update_vocab=False, show_progress=False, return_as="ids"
            )
            indices, scores = self._index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [
            (int(index), float(score))
            for index, score in zip(indices[0], scores[0], strict=True)
            if float(score) > 0.0
        ]

    def spec_config(self) -> dict[str, Any]:
        return {
            "passages": [
                {"text": p.text, "id": p.id, "metadata": dict(p.metadata)} for p in self.passages
            ],
            "stopwords": self.stopwords,
            "stemmer": self.stemmer,
            "k1": self.k1,
            "b": self.b,
        }

    @classmethod
    def from_spec_config(cls, config: Mapping[str, Any]) -> BM25Retriever:
        return cls(
            [_as_passage(p, i) for i, p in enumerate(config.get("passages") or [])],
            stopwords=config.get("stopwords", "en"),
            stemmer=config.get("stemmer"),
            k1=float(config.get("k1", 1.5)),
            b=float(config.get("b", 0.75)),
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> BM25Retriever:
        return self  # an immutable index: share it

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"BM25Retriever({len(self.passages)} passages)"


def _as_passage(item: str | Passage | Mapping[str, Any], index: int) -> Passage:
    if isinstance(item, Passage):
        return item
    if isinstance(item, str):
        return Passage(text=item, id=str(index))
    if isinstance(item, Mapping) and "text" in item:
        extra = {k: v for k, v in item.items() if k not in ("text", "id", "metadata", "score")}
        metadata = {**dict(item.get("metadata") or {}), **extra}
        return Passage(text=str(item["text"]), id=str(item.get("id", index)), metadata=metadata)
    raise lf.UsageError(
        f"passage {index} must be a string, Passage or dict with 'text'; got {item!r}"
    )


def _indexed_text(passage: Passage) -> str:
    title = passage.metadata.get("title")
    return f"{title}. {passage.text}" if isinstance(title, str) and title else passage.text


def _stemmer(language: str | None) -> Any:
    if language is None:
        return None
    try:
        import Stemmer
    except ImportError:
        raise lf.MissingExtraError(
            "PyStemmer", "retrieval", f"BM25Retriever(stemmer={language!r}) (or pass stemmer=None)"
        ) from None
    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise lf.UsageError(
            f"unknown stemmer language {language!r}; use one of {Stemmer.algorithms()} or None"
        ) from None


def _bm25s() -> tuple[Any, Any]:
    try:
        import bm25s
        from bm25s.tokenization import Tokenizer
    except ImportError:
        raise lf.MissingExtraError("bm25s", "retrieval", "BM25Retriever") from None
    return bm25s, Tokenizer
