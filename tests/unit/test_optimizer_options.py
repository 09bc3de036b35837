"""Optimizer settings declared once (dataclass fields): the constructors, their checks and
``config()`` (the run's identity and the artifact's record) all derive from them."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import lmforge as lf
import pytest
from lmforge.optimizers import create
from lmforge.optimizers.base import Optimizer
from lmforge.optimizers.run import program_fingerprint

TEACHER = lf.Predict("q -> a")
BOOT = {"max_bootstrapped_demos": 4, "max_labeled_demos": 16, "max_rounds": 1}
MIPRO = {
    "auto": "light", "num_trials": None, "minibatch_size": 25,
    "num_instruction_candidates": None, "num_demo_sets": None, "max_bootstrapped_demos": 4,
    "max_labeled_demos": 4, "full_eval_steps": 5, "prompt_model": None,
}  # fmt: skip
FINETUNE = {
    "teacher": None, "finetuner": "auto", "epochs": None, "include_demos": False,
    "max_labeled_demos": 8, "max_rounds": 1, "metric_threshold": 1.0,
    "validation_fraction": 0.1, "finetuner_options": {}, "fewshot_after": False,
    "fewshot_options": None,
}  # fmt: skip


# The configs the hand-written config() methods recorded before the settings were declared
# as fields: run identities (and so resumable run directories) depend on them.
@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("labeled", {"k": 3, "sample": False}, {"k": 3, "sample": False, "balanced": True}),
        # calibration is recorded only when it is not the default ("auto")
        ("labeled", {"k": 3, "calibration": "off"},
         {"k": 3, "sample": True, "balanced": True, "calibration": "off"}),
        ("knn", {"k": 2}, {"k": 2, "balanced": False, "order": "interleave", "max_pool": 1000,
                           "stemmer": "english", "embedder": None}),
        (
            "bootstrap",
            {},
            {**BOOT, "metric_threshold": 1.0, "rollout_temperature": 1.0, "teacher": None},
        ),
        (
            "bootstrap",
            {"max_bootstrapped_demos": 2, "teacher": TEACHER, "rollout_temperature": 0.7},
            {**BOOT, "max_bootstrapped_demos": 2, "metric_threshold": 1.0,
             "rollout_temperature": 0.7, "teacher": program_fingerprint(TEACHER)},
        ),
        (
            "random",
            {"num_candidates": 2, "stop_at_score": 0.9},
            {"num_candidates": 2, **BOOT, "metric_threshold": 1.0, "stop_at_score": 0.9,
             "teacher": None},
        ),
        ("mipro", {}, MIPRO),
        (
            "mipro",
            {"num_trials": 3, "prompt_lm": "openai/gpt-4o-mini", "storage": "sqlite:///x.db"},
            {**MIPRO, "auto": None, "num_trials": 3, "prompt_model": "openai/gpt-4o-mini"},
        ),
        (
            "instructions",
            {"breadth": 3, "prompt_lm": lf.LM("openai/gpt-4o-mini"), "temperature": 0.5},
            {"breadth": 3, "depth": 3, "temperature": 0.5, "prompt_model": "openai/gpt-4o-mini"},
        ),
        ("finetune", {}, FINETUNE),
        (
            "finetune",
            {"teacher": "labels", "epochs": 2, "finetuner_options": {"rank": 4, "api_key": "x"},
             "fewshot_after": True, "fewshot_options": {"max_labeled_demos": 2}},
            {**FINETUNE, "teacher": "labels", "epochs": 2, "finetuner_options": {"rank": 4},
             "fewshot_after": True,
             "fewshot_options": {"max_bootstrapped_demos": 4, "max_labeled_demos": 2}},
        ),
        (
            "finetune",
            {"teacher": lf.LM("openai/gpt-4o"), "finetuner": "openai"},
            {**FINETUNE, "teacher": "openai/gpt-4o", "finetuner": "openai"},
        ),
    ],
)  # fmt: skip
def test_config_records_the_same_settings_as_before(
    name: str, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert create(name, **options).config() == expected


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("labeled", {"k": -1}, "LabeledFewShot(k=...) must be at least 0, got -1"),
        ("bootstrap", {"max_rounds": 0}, "BootstrapFewShot(max_rounds=...) must be at least 1"),
        ("bootstrap", {"teacher": "x"}, "(teacher=...) must be an lf.Module, got str"),
        (
            "random",
            {"max_bootstrapped_demos": 0},
            "(max_bootstrapped_demos=...) must be at least 1",
        ),
        ("mipro", {"num_trials": 0}, "MIPRO(num_trials=...) must be at least 1, got 0"),
        ("mipro", {"auto": "light", "num_trials": 2}, "either auto"),
        ("instructions", {"breadth": 1}, "InstructionSearch(breadth=...) must be at least 2"),
        ("instructions", {"prompt_lm": 3}, "prompt_lm must be an lf.LM or a model name"),
        ("finetune", {"epochs": 0}, "Finetune(epochs=...) must be at least 1, got 0"),
        ("finetune", {"fewshot_options": {"z": 1}}, "unknown fewshot_options"),
    ],
)
def test_settings_are_checked_when_the_optimizer_is_built(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(lf.UsageError, match=re.escape(message)):
        create(name, **options)


def test_positional_settings_keep_their_order_and_the_prompt_model_is_an_lm() -> None:
    from lmforge.optimizers import MIPRO, BootstrapFewShot, RandomSearch

    boot = BootstrapFewShot(2, 3, TEACHER, 4)
    assert (boot.max_bootstrapped_demos, boot.max_labeled_demos, boot.max_rounds) == (2, 3, 4)
    assert RandomSearch(5).num_candidates == 5
    assert isinstance(MIPRO(prompt_lm="openai/gpt-4o-mini").prompt_lm, lf.LM)
    assert repr(boot).startswith("BootstrapFewShot(max_bootstrapped_demos=2,")


def test_an_optimizer_without_declared_settings_must_say_what_it_records() -> None:
    class Plain(Optimizer):
        def estimate_calls(self, program: Any, trainset: Any, valset: Any) -> int:
            return 0

        def _compile(self, run: Any) -> lf.Module:
            return run.student  # type: ignore[no-any-return]

    with pytest.raises(TypeError, match="declare its settings as dataclass fields"):
        Plain().config()

    @dataclasses.dataclass(eq=False, repr=False)
    class Declared(Plain):
        rounds: int = 2

    assert Declared().config() == {"rounds": 2}
