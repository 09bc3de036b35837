"""Instruction proposals: an lmforge program that writes instructions for another one.

The proposer sees what a good prompt writer would look at: a summary of the training data,
the structure of the program (every step with its fields), the step's current
instructions, a few worked examples of the step (bootstrapped demos) and a writing tip.
It runs on its own ``prompt_lm`` (pinned on its predictors), never on the task model
unless no prompt model is given. Calls differ by ``rollout_id`` so cached answers stay
reproducible while candidates stay distinct.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import lmforge as lf
from lmforge.errors import LMError, ParseError, UsageError

__all__ = [
    "TIPS",
    "DescribeData",
    "ImproveInstruction",
    "InstructionProposer",
    "ProposeInstruction",
    "as_lm",
    "clean_instruction",
    "describe_program",
    "describe_step",
    "pick_tip",
    "propose_candidates",
    "render_examples",
]

TIPS: dict[str, str] = {
    "plain": "Write a clear, direct instruction.",
    "concise": "Keep the instruction short and to the point.",
    "descriptive": "Describe the task precisely, including what each output field must contain.",
    "stakes": "Explain why getting the answer right matters in this setting.",
    "persona": "Start by giving the model a fitting expert role.",
    "rules": "State the decision rules that separate the possible answers.",
}
_MAX_FIELD_CHARS = 300
_MAX_INSTRUCTION_CHARS = 1500


class DescribeData(lf.Signature):
    """Read sample records of a dataset and summarise it for someone writing a prompt for
    the task: what the inputs look like, which outputs occur and how often, and anything
    unusual."""

    records: str = lf.InputField(desc="sample records of the dataset")
    summary: str = lf.OutputField(desc="two to four sentences about the data")


class ProposeInstruction(lf.Signature):
    """Write the instruction for one step of a language-model program. Ground it in the
    data summary, the program structure and the worked examples, and follow the tip.
    Answer with the instruction text only."""

    program_structure: str = lf.InputField(desc="every step of the program with its fields")
    step: str = lf.InputField(desc="the step to write the instruction for")
    current_instruction: str = lf.InputField(desc="the step's current instruction")
    data_summary: str = lf.InputField(desc="what the training data looks like")
    examples: str = lf.InputField(desc="worked examples of this step")
    tip: str = lf.InputField(desc="how to write this instruction")
    proposed_instruction: str = lf.OutputField(desc="the new instruction")


class ImproveInstruction(lf.Signature):
    """Instructions tried for one step of a language-model program are listed with their
    scores on data (higher is better, best last). Write a new instruction that will score
    higher than all of them. Answer with the instruction text only."""

    step: str = lf.InputField(desc="the step the instruction is for")
    data_summary: str = lf.InputField(desc="what the training data looks like")
    attempts: str = lf.InputField(desc="instructions tried so far with their scores")
    proposed_instruction: str = lf.OutputField(desc="the new instruction")


class InstructionProposer(lf.Module):
    """Proposes instructions for the steps of a program, using ``prompt_lm``.

    ``describe`` summarises data, ``propose`` writes a fresh instruction for a step and
    ``improve`` writes one from scored attempts (COPRO-style). A failed proposal call
    (unparseable answer or provider error) yields ``None``; a spent budget propagates.
    """

    def __init__(self, prompt_lm: lf.LM | None = None, *, temperature: float = 1.0) -> None:
        self.describe = lf.Predict(DescribeData, lm=prompt_lm)
        self.propose = lf.Predict(ProposeInstruction, lm=prompt_lm)
        self.improve = lf.Predict(ImproveInstruction, lm=prompt_lm)
        self.temperature = temperature

    def forward(self, **inputs: Any) -> lf.Prediction:
        return self.propose(**inputs)

    def summarize(
        self, examples: Sequence[Mapping[str, Any]], *, seed: int = 0, sample: int = 12
    ) -> str:
        """A short description of ``examples`` (a seeded sample of at most ``sample``)."""
        if not examples:
            return "No training data was given."
        rng = random.Random(f"{seed}:summary")
        picked = rng.sample(list(examples), min(sample, len(examples)))
        records = render_examples(picked)
        answer = self._ask(self.describe, {"records": records}, rollout=0, field="summary")
        return answer or _fallback_summary(examples)

    def propose_for(
        self,
        *,
        structure: str,
        step: str,
        current: str,
        summary: str,
        demos: Sequence[Mapping[str, Any]],
        tip: str,
        rollout: int,
    ) -> str | None:
        """One fresh instruction for ``step``, or ``None`` when the answer was unusable."""
        inputs = {
            "program_structure": structure,
            "step": step,
            "current_instruction": current,
            "data_summary": summary,
            "examples": render_examples(demos[:3]) if demos else "No worked examples yet.",
            "tip": tip,
        }
        return self._ask(
            self.propose, inputs, rollout=rollout, field="proposed_instruction", clean=True
        )

    def improve_from(
        self, *, step: str, summary: str, attempts: Sequence[tuple[str, float]], rollout: int
    ) -> str | None:
        """A new instruction from ``(instruction, score)`` attempts, or ``None``."""
        ordered = sorted(attempts, key=lambda pair: pair[1])
        text = "\n\n".join(f"Instruction: {ins}\nScore: {score:.3f}" for ins, score in ordered)
        inputs = {"step": step, "data_summary": summary, "attempts": text}
        return self._ask(
            self.improve, inputs, rollout=rollout, field="proposed_instruction", clean=True
        )

    def _ask(
        self,
        predictor: lf.Predict,
        inputs: dict[str, Any],
        *,
        rollout: int,
        field: str,
        clean: bool = False,
    ) -> str | None:
        config = {"rollout_id": rollout, "temperature": self.temperature if rollout else 0.0}
        try:
            prediction = predictor(**inputs, config=config)
        except (ParseError, LMError):
            return None
        value = str(prediction[field])
        return clean_instruction(value) if clean else (value.strip() or None)


def describe_program(program: lf.Module) -> str:
    """The program's steps, one block each: name, fields and current instructions."""
    blocks = [f"Program {type(program).__name__} with {len(program.named_predictors())} step(s)."]
    for name, predictor in program.named_predictors():
        blocks.append(describe_step(name, predictor))
    return "\n\n".join(blocks)


def describe_step(name: str, predictor: lf.Predict) -> str:
    """One step: its name, input and output fields (with types and descriptions)."""
    signature = predictor.signature

    def fields(kind: str) -> str:
        chosen = signature.input_fields if kind == "input" else signature.output_fields
        parts = []
        for field in chosen:
            desc = f" ({field.description})" if field.description else ""
            parts.append(f"{field.name}: {field.type_name}{desc}")
        return "; ".join(parts)

    return (
        f"Step {name}\nInputs: {fields('input')}\nOutputs: {fields('output')}\n"
        f"Current instruction: {signature.instructions}"
    )


def render_examples(examples: Sequence[Mapping[str, Any]]) -> str:
    """Records as ``field: value`` blocks (long values shortened)."""
    blocks = []
    for index, example in enumerate(examples, start=1):
        lines = [f"Example {index}"]
        for key, value in dict(example).items():
            text = " ".join(str(value).split())
            if len(text) > _MAX_FIELD_CHARS:
                text = text[: _MAX_FIELD_CHARS - 3] + "..."
            lines.append(f"{key}: {text}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def clean_instruction(text: str) -> str | None:
    """Strip quotes, labels and trailing chatter; ``None`` when nothing usable is left."""
    value = text.strip()
    for label in ("Proposed instruction:", "Instruction:", "New instruction:"):
        if value.lower().startswith(label.lower()):
            value = value[len(label) :].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        value = value[1:-1].strip()
    value = value.split("\n\n")[0].strip()
    if len(value) > _MAX_INSTRUCTION_CHARS:
        value = value[:_MAX_INSTRUCTION_CHARS].rsplit(" ", 1)[0]
    return value if len(value.split()) >= 3 else None


def pick_tip(seed: int, predictor: str, index: int) -> str:
    """A writing tip chosen deterministically for one candidate."""
    names = sorted(TIPS)
    return TIPS[random.Random(f"{seed}:{predictor}:{index}").choice(names)]


def _fallback_summary(examples: Sequence[Mapping[str, Any]]) -> str:
    keys = sorted({key for example in examples for key in dict(example)})
    return f"{len(examples)} records with the fields {', '.join(keys)}."


def propose_candidates(
    program: lf.Module,
    proposer: InstructionProposer,
    *,
    num_candidates: int,
    summary: str,
    demo_sets: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]] = (),
    seed: int = 0,
) -> dict[str, list[str]]:
    """Instruction candidates per predictor: the current instruction first, then up to
    ``num_candidates - 1`` distinct proposals (one proposer call each)."""
    structure = describe_program(program)
    candidates: dict[str, list[str]] = {}
    for name, predictor in program.named_predictors():
        current = predictor.signature.instructions
        found = [current]
        for index in range(1, num_candidates):
            demos = demo_sets[index % len(demo_sets)].get(name, ()) if demo_sets else ()
            proposal = proposer.propose_for(
                structure=structure,
                step=describe_step(name, predictor),
                current=current,
                summary=summary,
                demos=list(demos),
                tip=pick_tip(seed, name, index),
                rollout=index,
            )
            if proposal is not None and proposal not in found:
                found.append(proposal)
        candidates[name] = found
    return candidates


def as_lm(value: lf.LM | str | None, what: str = "prompt_lm") -> lf.LM | None:
    """An ``lf.LM`` from an LM or a model name (as given on the command line)."""
    if value is None or isinstance(value, lf.LM):
        return value
    if isinstance(value, str) and value.strip():
        return lf.LM(value.strip())
    raise UsageError(
        f"{what} must be an lf.LM or a model name like 'openai/gpt-4o-mini', got {value!r}"
    )
