"""Few-shot demo sets for closed outputs: every label shown, labels taking turns.

Small models copy the label distribution of their demos (a label never shown is rarely
answered) and lean towards the label of the last demo (recency bias). Two rules, used by
``LabeledFewShot``, ``BootstrapFewShot`` and ``KNNFewShot``:

* :func:`balanced`: pick demos round-robin over the labels, so ``k`` demos cover
  ``min(k, labels)`` labels and no label has more than one demo over any other;
* :func:`interleave`: order demos so that labels take turns (never two of a label in a row
  while another label is left), in the order each label first appears in the input
  sequence. With a seeded sample the label shown last changes with the seed instead of
  being the label listed last; with nearest-first neighbours the nearest demo comes first,
  so recency does not add to its similarity.

Both are deterministic: randomness only comes from an explicit ``random.Random``.
Demos are dicts (``Example.to_dict()``); the label is the value of the ``label`` field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import lmforge as lf
from lmforge.fieldtypes import is_enum_like

__all__ = ["balanced", "closed_output", "interleave", "label_key", "take_turns"]

Demo = TypeVar("Demo", bound=Mapping[str, Any])


def closed_output(signature: lf.Signature) -> str | None:
    """The name of the first output field with a closed set of answers (``Literal``, enum
    or ``bool``), or ``None`` when every output is open."""
    for field in signature.output_fields:
        if field.annotation is bool or is_enum_like(field.annotation) is not None:
            return field.name
    return None


def label_key(demo: Mapping[str, Any], label: str) -> str:
    """The value of ``demo[label]`` as a grouping key."""
    # JSON text, so that 1, True and "1" stay distinct labels and enums compare by value.
    value = demo.get(label)
    return json.dumps(getattr(value, "value", value), sort_keys=True, default=str)


def _groups(demos: Sequence[Demo], label: str) -> list[list[Demo]]:
    """Demos grouped by label, groups in order of first appearance, order kept within."""
    groups: dict[str, list[Demo]] = {}
    for demo in demos:
        groups.setdefault(label_key(demo, label), []).append(demo)
    return list(groups.values())


def take_turns(groups: Sequence[Sequence[Demo]], k: int) -> list[Demo]:
    """Up to ``k`` items, one from each group in turn (first items of every group, then
    second items, ...)."""
    chosen: list[Demo] = []
    depth = 0
    while len(chosen) < k:
        row = [group[depth] for group in groups if depth < len(group)]
        if not row:
            break
        chosen.extend(row[: k - len(chosen)])
        depth += 1
    return chosen


def balanced(
    demos: Sequence[Demo], k: int, label: str, rng: random.Random | None = None
) -> list[Demo]:
    """Up to ``k`` demos, one label at a time round-robin, so every label is shown when
    ``k`` allows.

    With ``rng``, the demos within each label and the order of the labels are shuffled by
    it (a seeded, reproducible choice); without, both keep the input order (for ranked
    neighbours: the nearest demo of each label, the labels in order of their nearest demo).
    The result is already interleaved (see :func:`interleave`).
    """
    groups = _groups(demos, label)
    if rng is not None:
        groups = [rng.sample(group, len(group)) for group in groups]
        rng.shuffle(groups)
    return take_turns(groups, k)


def interleave(demos: Sequence[Demo], label: str) -> list[Demo]:
    """``demos`` reordered so labels take turns, each label's demos in their given order,
    the labels in the order they first appear."""
    return take_turns(_groups(demos, label), len(demos))
