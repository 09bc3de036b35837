"""Fake task models and programs shared by the optimizer tests.

The fake models speak the completion adapter's ``Label: value`` format (as the embedded
base model does) and decide their answer from the prompt, so demos visibly change scores.
"""

from __future__ import annotations

import re
from typing import Any

import lmforge as lf
from lmforge.testing import FunctionLM

KEYWORDS = {
    "refund": "billing",
    "invoice": "billing",
    "crash": "technical",
    "login": "technical",
    "price": "sales",
    "demo": "sales",
}


def last_value(prompt: str, label: str) -> str:
    values = re.findall(rf"^{label}: (.*)$", prompt, flags=re.M)
    return values[-1] if values else ""


def demo_count(prompt: str, label: str = "Team") -> int:
    """Demo blocks in a completion prompt: filled ``Team: value`` lines."""
    return len(re.findall(rf"^{label}: \S", prompt, flags=re.M))


def team_for(text: str) -> str:
    return next((team for word, team in KEYWORDS.items() if word in text), "sales")


class Router:
    """A fake base model for ``ticket -> team``.

    ``needs_demos``: without demos in the prompt it always answers ``sales``.
    Tickets containing "tricky" are answered wrong on rollout 0 and right on later rollouts.
    Every request is recorded in ``requests``; ``fail_after`` raises ``crash`` after that
    many backend calls (to simulate a killed process).
    """

    def __init__(
        self,
        *,
        needs_demos: bool = False,
        fail_after: int | None = None,
        crash: BaseException | None = None,
    ) -> None:
        self.needs_demos = needs_demos
        self.fail_after = fail_after
        self.crash = crash
        self.requests: list[lf.LMRequest] = []

    def __call__(self, request: lf.LMRequest) -> str:
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise self.crash or RuntimeError("killed")
        self.requests.append(request)
        prompt = request.as_text()
        ticket = last_value(prompt, "Ticket")
        if self.needs_demos and demo_count(prompt) == 0:
            return " sales"
        if "tricky" in ticket and not request.rollout_id:
            return " wrong"
        return " " + team_for(ticket)

    def lm(self, **kwargs: Any) -> FunctionLM:
        return FunctionLM(
            self, model_type="text", model=kwargs.pop("model", "test/router"), **kwargs
        )


def tickets(*texts: str) -> list[lf.Example]:
    return [lf.Example(ticket=t, team=team_for(t)).with_inputs("ticket") for t in texts]


TRAIN = tickets(
    "refund please",
    "app crash",
    "tricky refund",
    "price list",
    "login broken",
    "tricky crash",
    "invoice copy",
    "demo request",
)
VAL = tickets("refund twice", "crash on start", "need a demo", "login again", "price for 40")


class TwoStep(lf.Module):
    """summarize (ticket -> summary) then classify (summary -> team)."""

    def __init__(self) -> None:
        self.summarize = lf.Predict("ticket -> summary")
        self.classify = lf.Predict("summary -> team")

    def forward(self, ticket: str) -> lf.Prediction:
        summary = self.summarize(ticket=ticket).summary
        return self.classify(summary=summary)


def two_step_reply(request: lf.LMRequest) -> str:
    """Summaries keep the keyword; classification is wrong for tricky tickets."""
    prompt = request.as_text()
    if prompt.rstrip().endswith("Summary:"):
        ticket = last_value(prompt, "Ticket")
        keyword = next((w for w in KEYWORDS if w in ticket), "other")
        return f" about {keyword}" + (" tricky" if "tricky" in ticket else "")
    summary = last_value(prompt, "Summary")
    return " wrong" if "tricky" in summary else " " + team_for(summary)
