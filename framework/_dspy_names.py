"""Where a DSPy name lives in lmforge, for the AttributeError of ``lf.<DSPy name>``.

A DSPy user types ``lf.ChainOfThought`` or ``lf.BootstrapFewShot`` out of habit; the error
says where the lmforge form is instead of only that the name is missing.
"""

from __future__ import annotations

__all__ = ["hint_for"]

_MODULES = "from lmforge.modules import {}"
_OPTIMIZERS = "from lmforge.optimizers import {}"

# DSPy name -> the lmforge way to write it.
_HINTS: dict[str, str] = {
    **{
        name: _MODULES.format(name)
        for name in ("ChainOfThought", "ReAct", "BestOfN", "Refine", "Ensemble", "Retrieve", "Tool")
    },
    **{
        name: _OPTIMIZERS.format(name)
        for name in ("BootstrapFewShot", "LabeledFewShot", "KNNFewShot", "MIPRO")
    },
    "majority": _MODULES.format("majority") + " (or the Majority module)",
    "MIPROv2": _OPTIMIZERS.format("MIPRO"),
    "BootstrapFewShotWithRandomSearch": _OPTIMIZERS.format("RandomSearch"),
    "COPRO": _OPTIMIZERS.format("InstructionSearch"),
    "BootstrapFinetune": "from lmforge.optimizers.finetune import Finetune",
    "Evaluate": "lf.evaluate(program, data, metric=...)",
    "context": "with lf.use(lm=..., adapter=...): ...",
    "inspect_history": "lf.inspect(program) (or `with lf.track() as t:`)",
    "track_usage": "with lf.track() as t: ... then t.lm_calls / t.cost",
    "Parallel": "program.batch(list_of_inputs, concurrency=N)",
    "asyncify": "await program.acall(**inputs)",
    "TypedPredictor": "lf.Predict with typed fields (any pydantic type)",
    "TypedChainOfThought": _MODULES.format("ChainOfThought") + " with typed fields",
    "Assert": "from lmforge.modules import Refine (resample until a reward passes)",
    "Suggest": "from lmforge.modules import Refine (resample until a reward passes)",
    "OpenAI": 'lf.LM("openai/gpt-4o-mini")',
    "ProgramOfThought": "no built-in equivalent: write a Module that runs code as a Tool",
}


def hint_for(name: str) -> str | None:
    """The lmforge form of the DSPy name ``name``, or None when it is not a DSPy name."""
    return _HINTS.get(name)
