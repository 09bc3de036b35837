"""Runnable example programs, each with its own small labeled dataset (JSONL).

- :mod:`lmforge.examples.ticket_router`: route a support ticket to one of five teams.
- :mod:`lmforge.examples.expense_categoriser`: file a small business's bank-statement
  lines under eight expense categories.
- :mod:`lmforge.examples.contact_extraction`: pull a structured contact (a pydantic
  model) out of an email signature.
- :mod:`lmforge.examples.rag`: answer questions about a product manual (retrieve with
  BM25, then a ChainOfThought answer); its corpus and questions are under ``rag/``.

Each module defines ``program`` (or ``make_program()``), ``metric``, ``load(split)`` and
``main()``; run one with ``python -m lmforge.examples.ticket_router``.
"""

from __future__ import annotations

from ._data import EXAMPLES, SPLITS, load_split

__all__ = ["EXAMPLES", "SPLITS", "load_split"]
