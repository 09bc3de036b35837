"""Loading the examples' JSONL datasets (shipped next to this file, under ``data/``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Literal

import lmforge as lf
from lmforge.errors import UsageError

__all__ = ["EXAMPLES", "SPLITS", "load_split"]

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")

# dataset name -> the keys of each row that are inputs (the rest are labels)
EXAMPLES: dict[str, tuple[str, ...]] = {
    "tickets": ("ticket",),
    "expenses": ("line",),
    "contacts": ("text",),
    "intents": ("text",),
}


def load_split(dataset: str, split: Split) -> list[lf.Example]:
    """The ``split`` of ``dataset`` as examples with their inputs marked."""
    if dataset not in EXAMPLES:
        raise UsageError(f"unknown example dataset {dataset!r}; choose one of {sorted(EXAMPLES)}")
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    path = resources.files("lmforge.examples").joinpath("data", dataset, f"{split}.jsonl")
    examples: list[lf.Example] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{dataset}/{split}.jsonl line {number} is not JSON: {exc}") from None
        examples.append(lf.Example(row).with_inputs(*EXAMPLES[dataset]))
    return examples
