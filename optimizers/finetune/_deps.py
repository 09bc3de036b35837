"""Imports of the ``finetune`` extra, each failing with an error that names the extra."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from lmforge.errors import MissingExtraError

__all__ = ["quiet_transformers", "require"]

# Import name -> distribution name, in the order they are checked.
_PACKAGES = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "accelerate": "accelerate",
    "gguf": "gguf",
    "safetensors": "safetensors",
}


def require(*names: str, purpose: str = "Fine-tuning with LocalLoRA") -> list[Any]:
    """Import ``names`` (default: all of the extra's packages) or raise
    :class:`MissingExtraError` naming the ``finetune`` extra."""
    modules = []
    for name in names or tuple(_PACKAGES):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise MissingExtraError(_PACKAGES.get(name, name), "finetune", purpose) from None
    return modules


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own loading/saving progress bars inside the block (lmforge
    draws its own progress); the previous setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
