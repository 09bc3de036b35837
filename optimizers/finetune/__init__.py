"""Compile programs into fine-tuned weights.

    from lmforge.optimizers.finetune import Finetune, LocalLoRA

    tuned = Finetune(finetuner=LocalLoRA(epochs=3)).compile(
        program, trainset, metric=metric, valset=devset, lm=lf.LM("local/gemma-3-270m"),
        run_dir="runs/router-ft",
    )
    tuned.save("out/router@gemma-ft.json")   # the LoRA adapter is copied next to it

:class:`Finetune` is the optimizer (``lmforge compile --optimizer finetune``);
:class:`LocalLoRA` trains a LoRA adapter on this machine (the ``finetune`` extra);
:class:`OpenAIFinetune` runs a managed OpenAI fine-tuning job. Classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .local_lora import LocalLoRA
    from .openai_ft import FinetuneJobError, OpenAIFinetune
    from .optimizer import Finetune

__all__ = ["Finetune", "FinetuneJobError", "LocalLoRA", "OpenAIFinetune"]

_WHERE = {
    "Finetune": ".optimizer",
    "LocalLoRA": ".local_lora",
    "OpenAIFinetune": ".openai_ft",
    "FinetuneJobError": ".openai_ft",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lmforge.optimizers.finetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
