"""Support-ticket router: send a customer's message to the team that should handle it.

Run it (the embedded local model by default, or ``$LMFORGE_MODEL``)::

    python -m lmforge.examples.ticket_router

It scores the zero-shot program on the test split, compiles it with few-shot demos
picked from the train split (scored on dev), scores the compiled program and saves it.
"""

from typing import Literal

import lmforge as lf

from ._data import Split, load_split
from ._main import run_example

__all__ = ["TEAMS", "TicketRoute", "load", "main", "make_program", "metric", "program"]

TEAMS = ("billing", "technical", "account", "shipping", "sales")


class TicketRoute(lf.Signature):
    """Route the customer support ticket to the team that should handle it."""

    ticket: str = lf.InputField(desc="the customer's message")
    team: Literal["billing", "technical", "account", "shipping", "sales"] = lf.OutputField()


def make_program() -> lf.Predict:
    """A fresh, uncompiled router."""
    return lf.Predict(TicketRoute)


program = make_program()


def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
    """1 when the predicted team is the labeled one."""
    return bool(prediction.team == example.team)


def load(split: Split) -> list[lf.Example]:
    """The ``train``, ``dev`` or ``test`` split (40 / 20 / 20 labeled tickets)."""
    return load_split("tickets", split)


def main(argv: list[str] | None = None) -> None:
    """Evaluate zero-shot, compile with few-shot demos, evaluate again, save."""
    run_example("ticket_router", make_program, metric, load, argv)


if __name__ == "__main__":
    main()
