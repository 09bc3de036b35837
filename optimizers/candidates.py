"""The candidate space of instruction optimizers: instructions per predictor and demo sets.

Every piece is a checkpointed :class:`~lmforge.optimizers.run.Run` step, so a resumed run
(or a second worker on the same run directory) reuses them instead of calling the LM again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import lmforge as lf

from .labeled import labeled_demos
from .proposer import InstructionProposer, propose_candidates
from .run import Run, fingerprint, jsonable

__all__ = ["CandidateSpace", "apply_choice", "build_space", "data_summary", "demo_sets"]

DemoSet = dict[str, list[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class CandidateSpace:
    """Instruction candidates per predictor (index 0 = the original) and demo sets
    (predictor name -> demos; set 0 is zero-shot)."""

    instructions: dict[str, list[str]]
    demo_sets: list[DemoSet]

    def digest(self) -> str:
        return fingerprint(self.instructions, self.demo_sets)

    def describe(self, choice: Mapping[str, tuple[int, int]]) -> str:
        """A short label of one choice, e.g. ``self: instruction 2, demo set 1``."""
        return "; ".join(
            f"{name}: instruction {i}, demo set {d}" for name, (i, d) in choice.items()
        )


def data_summary(run: Run, prompt_lm: lf.LM | None) -> str:
    """A prompt-model summary of the training data (checkpointed)."""
    proposer = InstructionProposer(prompt_lm)
    return str(
        run.step("candidates/summary", lambda: proposer.summarize(run.trainset, seed=run.seed))
    )


def demo_sets(
    run: Run, program: lf.Module, count: int, *, max_bootstrapped: int, max_labeled: int
) -> list[DemoSet]:
    """``count`` demo sets: zero-shot, labeled-only, then bootstrapped sets (the first on
    the training set in order, the others on seeded shuffles with a seeded demo count)."""
    names = [name for name, _ in program.named_predictors()]
    sets: list[DemoSet] = [{name: [] for name in names}]
    if count >= 2:
        labeled = labeled_demos(run.trainset, max_labeled, run.rng("candidates", "labeled"))
        sets.append({name: _fitting(p, labeled) for name, p in program.named_predictors()})
    for index in range(2, count):
        sets.append(_bootstrapped_set(run, program, index, max_bootstrapped, max_labeled))
    return sets


def _bootstrapped_set(
    run: Run, program: lf.Module, index: int, max_bootstrapped: int, max_labeled: int
) -> DemoSet:
    """Set 2 bootstraps over the training set in order; later sets over seeded shuffles,
    each with a seeded number (1..max) of bootstrapped demos. Traces are checkpointed per
    example and shared between sets (same teacher), so later sets cost little."""
    from lmforge.evaluation import run_sync

    from .bootstrap import acollect_traces, assemble, default_teacher

    examples = list(run.trainset)
    size = max_bootstrapped
    if index > 2:
        rng = run.rng("candidates", "demo-set", index)
        rng.shuffle(examples)
        size = rng.randint(1, max(1, max_bootstrapped))
    student = program.reset_copy()
    teacher = default_teacher(run, student, max_labeled)
    traces = run_sync(acollect_traces(run, teacher, examples, needed=size)) if size else []
    built = assemble(
        student,
        traces,
        examples,
        max_bootstrapped_demos=size,
        max_labeled_demos=max_labeled,
        rng=run.rng("candidates", "demo-set", index, "labeled"),
    )
    return {
        name: [dict(d) for d in predictor.demos] for name, predictor in built.named_predictors()
    }


def build_space(
    run: Run,
    program: lf.Module,
    *,
    summary: str,
    prompt_lm: lf.LM | None,
    num_instructions: int,
    num_demo_sets: int,
    max_bootstrapped: int,
    max_labeled: int,
) -> CandidateSpace:
    """Demo sets first (proposals are grounded in them), then instruction candidates."""
    sets = demo_sets(
        run, program, num_demo_sets, max_bootstrapped=max_bootstrapped, max_labeled=max_labeled
    )
    proposer = InstructionProposer(prompt_lm)
    grounding = sets[2:] or sets[1:] or sets

    def propose() -> dict[str, list[str]]:
        return propose_candidates(
            program,
            proposer,
            num_candidates=num_instructions,
            summary=summary,
            demo_sets=grounding,
            seed=run.seed,
        )

    instructions = run.step(f"candidates/instructions/{num_instructions}", propose)
    return CandidateSpace(
        instructions={str(k): [str(v) for v in values] for k, values in instructions.items()},
        demo_sets=jsonable(sets),
    )


def apply_choice(
    program: lf.Module, space: CandidateSpace, choice: Mapping[str, tuple[int, int]]
) -> lf.Module:
    """A copy of ``program`` with each predictor's chosen instruction and demo set."""
    new = program.deepcopy()
    for name, predictor in new.named_predictors():
        instruction, demo_set = choice[name]
        if instruction:  # 0 keeps the original signature untouched
            predictor.signature = predictor.signature.with_instructions(
                space.instructions[name][instruction]
            )
        predictor.demos = space.demo_sets[demo_set].get(name, [])
    return new


def _fitting(predictor: lf.Predict, demos: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The demos that hold every field of ``predictor``'s signature, trimmed to them."""
    fields = predictor.signature.field_names()
    return [{k: demo[k] for k in fields} for demo in demos if all(k in demo for k in fields)]
