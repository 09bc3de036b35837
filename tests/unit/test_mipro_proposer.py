"""The instruction proposer: an lmforge program that writes instructions on its own LM."""

from __future__ import annotations

import lmforge as lf
import pytest
from lmforge.errors import BudgetExceededError
from lmforge.optimizers.proposer import (
    InstructionProposer,
    clean_instruction,
    describe_program,
    pick_tip,
    propose_candidates,
)
from lmforge.testing import FunctionLM, ScriptedLM


class Pipeline(lf.Module):
    def __init__(self) -> None:
        self.extract = lf.Predict("email -> amount: float")
        self.classify = lf.Predict("email, amount: float -> category: Literal['travel', 'food']")

    def forward(self, email: str) -> lf.Prediction:
        amount = self.extract(email=email).amount
        return self.classify(email=email, amount=amount)


def proposal(text: str) -> str:
    return f"[[ ## proposed_instruction ## ]]\n{text}\n\n[[ ## completed ## ]]"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('"Classify the expense by its category."', "Classify the expense by its category."),
        (
            "Instruction: Read the email and extract the amount.",
            "Read the email and extract the amount.",
        ),
        ("Sort it carefully please.\n\nHere is why this works: ...", "Sort it carefully please."),
        ("ok", None),
        ("", None),
    ],
)
def test_clean_instruction(raw: str, clean: str | None) -> None:
    assert clean_instruction(raw) == clean


def test_program_structure_lists_every_step_with_fields() -> None:
    text = describe_program(Pipeline())
    assert "Program Pipeline with 2 step(s)." in text
    assert "Step extract\nInputs: email: str\nOutputs: amount: float" in text
    assert "Step classify" in text and "category: Literal['travel', 'food']" in text


def test_candidates_keep_the_original_first_and_drop_duplicates_and_failures() -> None:
    replies = iter(
        [
            proposal("Pull the total amount out of the email."),
            proposal("x"),
            proposal("Pull the total amount out of the email."),
            proposal("Decide whether the expense is travel or food."),
            "",
            proposal("Pick the expense category from the email."),
        ]
    )
    prompt = FunctionLM(lambda request: next(replies))
    program = Pipeline()
    demos = [{"extract": [{"email": "taxi 20 EUR", "amount": 20.0}], "classify": []}]
    found = propose_candidates(
        program,
        InstructionProposer(prompt),
        num_candidates=4,
        summary="Expense emails.",
        demo_sets=demos,
        seed=3,
    )
    assert found["extract"] == [
        program.extract.signature.instructions,
        "Pull the total amount out of the email.",
    ]
    assert found["classify"] == [
        program.classify.signature.instructions,
        "Decide whether the expense is travel or food.",
        "Pick the expense category from the email.",
    ]
    assert len(prompt.calls) == 6
    first = prompt.calls[0].as_text()
    assert "Expense emails." in first and "taxi 20 EUR" in first  # grounded in summary and demos
    # every call of a predictor has its own rollout id, so cached answers stay distinct
    assert [r.rollout_id for r in prompt.calls] == [1, 2, 3, 1, 2, 3]


def test_proposals_run_on_the_prompt_lm_even_inside_another_lm_scope() -> None:
    task = ScriptedLM([])
    prompt = FunctionLM(lambda request: proposal("Route the ticket to one team."))
    proposer = InstructionProposer(prompt)
    with lf.use(lm=task):
        text = proposer.propose_for(
            structure="s", step="t", current="c", summary="d", demos=[], tip="tip", rollout=1
        )
    assert text == "Route the ticket to one team."
    assert len(prompt.calls) == 1 and not task.calls


def test_a_spent_budget_is_not_swallowed() -> None:
    def spent(request: lf.LMRequest) -> str:
        raise BudgetExceededError("the budget of 0 LM call(s) is spent")

    proposer = InstructionProposer(FunctionLM(spent))
    with pytest.raises(BudgetExceededError):
        proposer.propose_for(
            structure="s", step="t", current="c", summary="d", demos=[], tip="t", rollout=1
        )


def test_tips_are_seeded() -> None:
    assert pick_tip(0, "self", 1) == pick_tip(0, "self", 1)
    assert len({pick_tip(seed, "self", 1) for seed in range(30)}) > 1
