"""Optimizers: compile a program against labeled data into an optimized, per-model copy.

    from lmforge.optimizers import BootstrapFewShot

    compiled = BootstrapFewShot(max_bootstrapped_demos=4).compile(
        program, trainset, metric=lf.metrics.exact_match, valset=devset,
        lm=lf.LM("openai/gpt-4o-mini"),
    )
    compiled.save("triage@gpt-4o-mini.json")

Optimizers are looked up by name (``lmforge compile --optimizer NAME``) in
:data:`OPTIMIZERS`; classes load on first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmforge.errors import UsageError

if TYPE_CHECKING:
    from .auto import AutoFewShot
    from .base import Optimizer
    from .bootstrap import BootstrapFewShot
    from .failures import TooManyErrorsError
    from .instruction_search import InstructionSearch
    from .knn import KNNFewShot
    from .labeled import LabeledFewShot
    from .mipro import MIPRO
    from .random_search import RandomSearch

__all__ = [
    "MIPRO",
    "OPTIMIZERS",
    "AutoFewShot",
    "BootstrapFewShot",
    "InstructionSearch",
    "KNNFewShot",
    "LabeledFewShot",
    "Optimizer",
    "RandomSearch",
    "TooManyErrorsError",
    "create",
    "optimizer_class",
]

#: Optimizer name -> ``"module:Class"`` (imported on first use).
OPTIMIZERS: dict[str, str] = {
    "auto": "lmforge.optimizers.auto:AutoFewShot",
    "labeled": "lmforge.optimizers.labeled:LabeledFewShot",
    "knn": "lmforge.optimizers.knn:KNNFewShot",
    "bootstrap": "lmforge.optimizers.bootstrap:BootstrapFewShot",
    "random": "lmforge.optimizers.random_search:RandomSearch",
    "mipro": "lmforge.optimizers.mipro:MIPRO",
    "instructions": "lmforge.optimizers.instruction_search:InstructionSearch",
    "finetune": "lmforge.optimizers.finetune.optimizer:Finetune",
}

_CLASSES = {path.rsplit(":", 1)[1]: path for path in OPTIMIZERS.values()}
_CLASSES["Optimizer"] = "lmforge.optimizers.base:Optimizer"
_CLASSES["TooManyErrorsError"] = "lmforge.optimizers.failures:TooManyErrorsError"


def _load(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def optimizer_class(name: str) -> type[Optimizer]:
    """The optimizer class registered under ``name`` (``bootstrap``, ``random``, ...)."""
    path = OPTIMIZERS.get(name)
    if path is None:
        raise UsageError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(sorted(OPTIMIZERS))}"
        )
    return _load(path)  # type: ignore[no-any-return]


def create(name: str, **options: Any) -> Optimizer:
    """Build the optimizer named ``name`` with ``options`` (its constructor arguments).

    Options are checked against the constructor first: an unknown name, or a value of the
    wrong type (``num_trials="abc"`` where an int is expected, as ``-o num_trials=abc``
    gives), is a :class:`UsageError` naming the option and what it expects.
    """
    from ._options import check_options

    cls = optimizer_class(name)
    check_options(cls, name, options)
    try:
        return cls(**options)
    except TypeError as exc:
        raise UsageError(f"optimizer {name!r}: bad option(s): {exc}") from None


def __getattr__(name: str) -> Any:
    path = _CLASSES.get(name)
    if path is None:
        for registered in OPTIMIZERS.values():
            if registered.rsplit(":", 1)[1] == name:
                path = registered
                break
    if path is None:
        raise AttributeError(f"module 'lmforge.optimizers' has no attribute {name!r}")
    value = _load(path)
    globals()[name] = value
    return value
