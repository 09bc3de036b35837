"""Banking intent classifier: DSPy's classification tutorial, written in lmforge.

DSPy's tutorial classifies Banking77 queries with ``dspy.ChainOfThought(f"text -> label:
Literal{CLASSES}")`` and compiles it with an optimizer. Here the same program runs on a
small, shipped set of 96 banking queries over eight intents (``data/intents``) and is
compiled with ``BootstrapFewShot``, so it runs offline on the embedded local model.

    python -m lmforge.examples.intent_classifier
    python -m lmforge.examples.intent_classifier --model openai/gpt-4o-mini

The DSPy original, for comparison::

    classify = dspy.Predict(f"text -> label: Literal{CLASSES}")
    optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=4)
    compiled = optimizer.compile(classify, trainset=train)
"""

from typing import Literal, get_args

import lmforge as lf

from ._data import Split, load_split
from ._main import run_example

__all__ = ["INTENTS", "Intent", "load", "main", "make_program", "metric", "program"]

Intent = Literal[
    "card_lost",
    "card_arrival",
    "transfer_failed",
    "exchange_rate",
    "balance",
    "pin_change",
    "refund_status",
    "account_close",
]
INTENTS: tuple[str, ...] = get_args(Intent)


def make_program() -> lf.Predict:
    """A fresh, uncompiled classifier (the tutorial's ``text -> label`` signature)."""
    signature = lf.Signature(
        {
            "text": lf.InputField(desc="a bank customer's message"),
            "intent": (Intent, lf.OutputField()),
        },
        "Classify the bank customer's message by its intent.",
    )
    return lf.Predict(signature)


program = make_program()


def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> bool:
    """1 when the predicted intent is the labeled one."""
    return bool(prediction.intent == example.intent)


def load(split: Split) -> list[lf.Example]:
    """The ``train``, ``dev`` or ``test`` split (48 / 24 / 24 labeled queries)."""
    return load_split("intents", split)


def main(argv: list[str] | None = None) -> None:
    """Evaluate zero-shot, compile with BootstrapFewShot, evaluate again, save."""
    run_example("intent_classifier", make_program, metric, load, argv)


if __name__ == "__main__":
    main()
