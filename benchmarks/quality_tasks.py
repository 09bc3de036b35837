"""The quality benchmark's tasks: four labeled datasets and their hand-written baselines.

The data lives under ``benchmarks/data/quality/<name>/{train,dev,test}.jsonl`` (see the
README there). Each task has a signature with a ``Literal`` output (what zero-shot runs and
what the optimizers compile) and a hand-written 4-shot prompt: a short instruction and four
demos picked by hand from the train split. The hand-written prompts were fixed before any
figure was measured; they are the baselines a compiled program must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import lmforge as lf
from lmforge.metrics import ExactMatch

__all__ = ["DATA", "SPLITS", "TASKS", "Split", "Task"]

DATA = Path(__file__).resolve().parent / "data" / "quality"
Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")


class HeadlineTopic(lf.Signature):
    """Classify the news headline by its topic."""

    headline: str = lf.InputField(desc="a news headline")
    topic: Literal["politics", "business", "sports", "science", "health", "entertainment"] = (
        lf.OutputField()
    )


class ReviewAspect(lf.Signature):
    """Say which aspect of the restaurant the review is about."""

    review: str = lf.InputField(desc="one sentence from a restaurant review")
    aspect: Literal["food", "service", "price", "ambience", "cleanliness"] = lf.OutputField()


class SchedulingRequest(lf.Signature):
    """Say whether the message asks to schedule or reschedule a meeting or appointment."""

    message: str = lf.InputField(desc="a short message or email")
    scheduling_request: Literal["yes", "no"] = lf.OutputField()


class HelpdeskRequest(lf.Signature):
    """Say what kind of IT help the message asks for."""

    message: str = lf.InputField(desc="a message to the IT helpdesk")
    kind: Literal["access", "hardware", "software", "network"] = lf.OutputField()


@dataclass(frozen=True)
class Task:
    """One classification task: its data, its signature and its hand-written prompt."""

    name: str
    signature: type[lf.Signature]
    input: str
    label: str
    #: the hand-written prompt's instruction
    instructions: str
    #: the hand-written prompt's demos, ``(input text, label)``, each a row of train
    demos: tuple[tuple[str, str], ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """The label set: the ``Literal`` values of the output field."""
        return tuple(get_args(self.signature.field(self.label).annotation))

    @property
    def metric(self) -> ExactMatch:
        """1 when the predicted label is the labeled one."""
        return ExactMatch(self.label)

    def load(self, split: Split) -> list[lf.Example]:
        """The ``train``, ``dev`` or ``test`` split, inputs marked."""
        return lf.data.load_jsonl(
            DATA / self.name / f"{split}.jsonl", inputs=[self.input], labels=[self.label]
        )

    def zero_shot(self) -> lf.Predict:
        """The signature alone: its one-line docstring, no demos."""
        return lf.Predict(self.signature)

    def hand_written(self) -> lf.Predict:
        """The hand-written 4-shot prompt."""
        demos = [
            lf.Example({self.input: text, self.label: label}).with_inputs(self.input)
            for text, label in self.demos
        ]
        return lf.Predict(self.signature.with_instructions(self.instructions), demos=demos)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="headlines",
            signature=HeadlineTopic,
            input="headline",
            label="topic",
            instructions=(
                "Classify the news headline by its main topic: politics (governments, "
                "elections, diplomacy), business (companies, markets, the economy), sports, "
                "science (research, space, nature, discoveries), health (medicine, disease, "
                "healthcare) or entertainment (film, music, TV, celebrities, games)."
            ),
            demos=(
                ("Central bank raises interest rates by a quarter point", "business"),
                ("Voter turnout hits record high in regional elections", "politics"),
                ("Drug approved for early-stage Alzheimer's patients", "health"),
                ("Astronomers detect water vapour on distant exoplanet", "science"),
            ),
        ),
        Task(
            name="reviews",
            signature=ReviewAspect,
            input="review",
            label="aspect",
            instructions=(
                "Say which aspect of the restaurant the review sentence is about: food "
                "(taste, cooking), service (the staff), price (cost, value), ambience "
                "(atmosphere, decor, noise, lighting) or cleanliness (hygiene, dirt)."
            ),
            demos=(
                ("Twelve dollars for a coffee and a croissant is hard to justify.", "price"),
                ("We waited forty minutes before anyone took our order.", "service"),
                ("The steak was chewy and gristly, hard to even cut.", "food"),
                ("Sticky floors and crumbs left on every seat.", "cleanliness"),
            ),
        ),
        Task(
            name="scheduling",
            signature=SchedulingRequest,
            input="message",
            label="scheduling_request",
            instructions=(
                "Answer yes if the message asks to set up, move or cancel-and-rebook a "
                "meeting, call or appointment; answer no for anything else, including "
                "messages that only mention a past or already-planned meeting."
            ),
            demos=(
                ("Could we postpone Friday's meeting by a week?", "yes"),
                ("Here's a summary of what we agreed in this morning's call.", "no"),
                ("When are you available for a coffee next week?", "yes"),
                ("The invoice for March is attached; please pay within 30 days.", "no"),
            ),
        ),
        Task(
            name="requests",
            signature=HelpdeskRequest,
            input="message",
            label="kind",
            instructions=(
                "Say what kind of IT help the message asks for: access (accounts, passwords, "
                "permissions, logins), hardware (a device or peripheral that is broken or "
                "needed), software (installing, licensing, or an application crashing or "
                "misbehaving) or network (wifi, VPN, internet, slow or dropped connections). "
                "Go by the problem itself, not by the device it happens on."
            ),
            demos=(
                ("Excel crashes every time I open the forecast file.", "software"),
                ("I'm working from a hotel and the VPN won't connect on their network.", "network"),
                (
                    "Why can't I open the Q3 budget folder anymore? It tells me I don't have "
                    "permission.",
                    "access",
                ),
                (
                    "My monitor flickers constantly and sometimes goes black for a second.",
                    "hardware",
                ),
            ),
        ),
    )
}
