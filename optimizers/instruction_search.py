"""``InstructionSearch``: iterative instruction proposals scored on data (COPRO-style).

For each predictor in turn (the others held at their best so far): the original
instruction plus ``breadth - 1`` fresh proposals are scored on the valset; then, for
``depth - 1`` more rounds, the prompt model sees the instructions tried so far with their
scores and proposes ``breadth`` new ones. The predictor keeps its best instruction. Demos
are left as they are. Proposals and evaluations are checkpointed run steps, so a killed
run resumes without repeating them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import lmforge as lf

from ._options import setting
from .base import Optimizer, lm_calls_per_run
from .candidates import data_summary
from .proposer import InstructionProposer, as_lm, describe_program, describe_step, pick_tip
from .run import Run, program_fingerprint

__all__ = ["InstructionSearch"]

_SHOWN_ATTEMPTS = 6


@dataclasses.dataclass(eq=False, repr=False)
class InstructionSearch(Optimizer):
    """Search each predictor's instruction by proposing, scoring and refining (COPRO).

    Args:
        breadth: instructions scored per round (the first round includes the original).
        depth: rounds per predictor; rounds after the first refine from scored attempts.
        prompt_lm: the model that writes instructions, an ``lf.LM`` or a model name
            (default: the task model).
        temperature: sampling temperature of the proposals.
    """

    name = "instructions"

    breadth: int = setting(6, least=2)  # the original plus at least one proposal
    depth: int = setting(3, least=1)
    _: dataclasses.KW_ONLY
    prompt_lm: lf.LM | str | None = setting(None, record="prompt_model", convert=as_lm)  # noqa: RUF009
    temperature: float = setting(1.0, least=0)

    def estimate_calls(
        self,
        program: lf.Module,
        trainset: Sequence[lf.Example],
        valset: Sequence[lf.Example] | None,
    ) -> int:
        steps = len(program.predictors())
        val = len(valset) if valset else len(trainset)
        proposals = 1 + steps * (self.breadth - 1 + (self.depth - 1) * self.breadth)
        evaluations = steps * self.depth * self.breadth
        return proposals + evaluations * val * lm_calls_per_run(program)

    def _compile(self, run: Run) -> lf.Module:
        program = run.student.deepcopy()
        run.set_fallback(program)
        run.progress.phase("summarising data")
        prompt_lm = as_lm(self.prompt_lm)  # already an LM (converted when built)
        summary = data_summary(run, prompt_lm)
        proposer = InstructionProposer(prompt_lm, temperature=self.temperature)
        search = _Search(run, proposer, summary, self.breadth)
        total = len(program.predictors()) * self.depth * self.breadth
        run.progress.phase("searching instructions", total=total)
        for name, _ in program.named_predictors():
            program = search.predictor(program, name, self.depth)
        best = run.best
        return best.program if best is not None else program


class _Search:
    """The per-predictor rounds of one run (scores are memoised per program)."""

    def __init__(self, run: Run, proposer: InstructionProposer, summary: str, breadth: int) -> None:
        self.run = run
        self.proposer = proposer
        self.summary = summary
        self.breadth = breadth
        self.valset = list(run.valset if run.valset else run.trainset)
        self._scores: dict[str, float] = {}
        self._trial = 0

    def predictor(self, program: lf.Module, name: str, depth: int) -> lf.Module:
        """Search ``name``'s instruction; returns ``program`` with the best one set."""
        predictor = dict(program.named_predictors())[name]
        structure = describe_program(program)
        step = describe_step(name, predictor)
        original = predictor.signature.instructions
        attempts: list[tuple[str, float]] = []
        best_program, best_score = program, self._score(program, name, original, 0)
        attempts.append((original, best_score))
        for round_ in range(depth):
            for index in range(self.breadth):
                if round_ == 0 and index == 0:
                    continue  # the original, scored above
                proposal = self._propose(name, structure, step, original, attempts, round_, index)
                self.run.progress.advance(1)
                if proposal is None or any(proposal == text for text, _ in attempts):
                    continue
                candidate = _with_instruction(program, name, proposal)
                score = self._score(candidate, name, proposal, round_)
                attempts.append((proposal, score))
                if score > best_score:
                    best_program, best_score = candidate, score
        return best_program

    def _propose(
        self,
        name: str,
        structure: str,
        step: str,
        original: str,
        attempts: list[tuple[str, float]],
        round_: int,
        index: int,
    ) -> str | None:
        rollout = round_ * self.breadth + index
        key = f"instructions/{name}/{round_}/{index}"
        if round_ == 0:

            def compute() -> str | None:
                return self.proposer.propose_for(
                    structure=structure,
                    step=step,
                    current=original,
                    summary=self.summary,
                    demos=[],
                    tip=pick_tip(self.run.seed, name, index),
                    rollout=rollout,
                )
        else:
            shown = sorted(attempts, key=lambda pair: pair[1])[-_SHOWN_ATTEMPTS:]

            def compute() -> str | None:
                return self.proposer.improve_from(
                    step=step, summary=self.summary, attempts=shown, rollout=rollout
                )

        value = self.run.step(key, compute)
        return str(value) if value is not None else None

    def _score(self, program: lf.Module, name: str, instruction: str, round_: int) -> float:
        key = program_fingerprint(program)
        if key not in self._scores:
            self._trial += 1
            result = self.run.evaluate(program, self.valset, label=f"instruction {self._trial}")
            self._scores[key] = result.score
            self.run.add_candidate(
                program,
                result.score,
                kind="instruction",
                predictor=name,
                round=round_,
                instruction=instruction,
            )
            self.run.add_trial(
                result.score, kind="full", trial=self._trial, label=f"{name}: {instruction[:80]}"
            )
        return self._scores[key]


def _with_instruction(program: lf.Module, name: str, instruction: str) -> lf.Module:
    new = program.deepcopy()
    predictor = dict(new.named_predictors())[name]
    predictor.signature = predictor.signature.with_instructions(instruction)
    return new
