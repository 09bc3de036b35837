"""Composed modules built on ``lf.Predict``.

Each adds one idea: ``ChainOfThought`` (a reasoning field), ``Chain`` (prompt chaining),
``ReAct`` (a tool loop), ``BestOfN`` / ``Refine`` (resampling against a reward),
``Majority`` / ``Ensemble`` (voting), ``Confidence`` (self-consistency or judge
confidence), ``Retrieve`` with ``BM25Retriever`` (retrieval); ``KNNDemos`` picks a
predictor's demos per input (set by ``KNNFewShot``).
Every module runs sync and async, batches, exposes its inner predictors to optimizers,
and saves to / loads from an artifact without pickling.
"""

from __future__ import annotations

from .chain import Chain
from .chain_of_thought import ChainOfThought
from .confidence import Confidence
from .ensemble import Ensemble, Majority, majority, normalize_answer
from .knn_demos import KNNDemos
from .react import ReAct
from .retrieve import BM25Retriever, Passage, Retrieve, Retriever
from .sampling import BestOfN, Refine, Reward
from .tools import Tool, ToolArgumentError

__all__ = [
    "BM25Retriever",
    "BestOfN",
    "Chain",
    "ChainOfThought",
    "Confidence",
    "Ensemble",
    "KNNDemos",
    "Majority",
    "Passage",
    "ReAct",
    "Refine",
    "Retrieve",
    "Retriever",
    "Reward",
    "Tool",
    "ToolArgumentError",
    "majority",
    "normalize_answer",
]
