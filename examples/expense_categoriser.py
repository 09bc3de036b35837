"""Expense categoriser: file a small business's bank-statement lines under a category.

Run it (the embedded local model by default, or ``$LMFORGE_MODEL``)::

    python -m lmforge.examples.expense_categoriser
"""

from typing import Literal

import lmforge as lf

from ._data import Split, load_split
from ._main import run_example

__all__ = ["CATEGORIES", "CategoriseExpense", "load", "main", "make_program", "metric", "program"]

CATEGORIES = (
    "supplies",
    "software",
    "travel",
    "meals",
    "utilities",
    "rent",
    "advertising",
    "payroll",
)

Category = Literal[
    "supplies", "software", "travel", "meals", "utilities", "rent", "advertising", "payroll"
]


class CategoriseExpense(lf.Signature):
    """Categorise the bank statement line of a small business's expense."""

    line: str = lf.InputField(desc="one line of the bank statement, with the amount")
    category: Category = lf.OutputField()


def make_program() -> lf.Predict:
    """A fresh, uncompiled categoriser."""
    return lf.Predict(CategoriseExpense)


program = make_program()


def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
    """1 when the predicted category is the labeled one."""
    return bool(prediction.category == example.category)


def load(split: Split) -> list[lf.Example]:
    """The ``train``, ``dev`` or ``test`` split (48 / 24 / 24 labeled lines)."""
    return load_split("expenses", split)


def main(argv: list[str] | None = None) -> None:
    """Evaluate zero-shot, compile with few-shot demos, evaluate again, save."""
    run_example("expense_categoriser", make_program, metric, load, argv)


if __name__ == "__main__":
    main()
