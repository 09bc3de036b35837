"""Contact extraction: read the sender's details out of an email's signature into a
structured :class:`Contact` (a pydantic model; missing details are ``null``).

Run it (the embedded local model by default, or ``$LMFORGE_MODEL``)::

    python -m lmforge.examples.contact_extraction
"""

import lmforge as lf
import pydantic

from ._data import Split, load_split
from ._main import run_example

__all__ = ["Contact", "ExtractContact", "load", "main", "make_program", "metric", "program"]

_FIELDS = ("name", "company", "email", "phone")


class Contact(pydantic.BaseModel):
    """Who sent the email, as written in its signature."""

    name: str
    company: str | None = None
    email: str | None = None
    phone: str | None = None


class ExtractContact(lf.Signature):
    """Extract the sender's contact details from the email signature."""

    text: str = lf.InputField(desc="an email ending with the sender's signature")
    contact: Contact = lf.OutputField()


def make_program() -> lf.Predict:
    """A fresh, uncompiled extractor."""
    return lf.Predict(ExtractContact)


program = make_program()


def _norm(value: object) -> str:
    return " ".join(str(value).split()).casefold() if value is not None else ""


def metric(example: lf.Example, prediction: lf.Prediction, trace: object = None) -> float:
    """The share of the four contact fields extracted exactly (case and spacing aside).

    The predicted value may be this module's :class:`Contact` or the equivalent model a
    loaded artifact rebuilds from the saved JSON schema, so it is compared as data.
    """
    gold = Contact.model_validate(example.contact)
    got = prediction.contact
    data = got.model_dump() if isinstance(got, pydantic.BaseModel) else got
    predicted = Contact.model_validate(data)
    hits = sum(_norm(getattr(gold, f)) == _norm(getattr(predicted, f)) for f in _FIELDS)
    return hits / len(_FIELDS)


def load(split: Split) -> list[lf.Example]:
    """The ``train``, ``dev`` or ``test`` split (20 / 10 / 10 labeled emails)."""
    return load_split("contacts", split)


def main(argv: list[str] | None = None) -> None:
    """Evaluate zero-shot, compile with few-shot demos, evaluate again, save."""
    run_example("contact_extraction", make_program, metric, load, argv)


if __name__ == "__main__":
    main()
