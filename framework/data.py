"""Datasets: load labeled JSONL, split it with a seed, and hash it.

``lf.data.load_jsonl("train.jsonl", inputs=["ticket"])`` returns ``lf.Example`` items
with the named keys marked as inputs; every other key is a label. Any bad line stops the
load with a one-line :class:`DataError` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .example import Example

__all__ = ["DataError", "as_field_names", "dataset_hash", "load_jsonl", "split"]


class DataError(UsageError):
    """A dataset file or record is malformed; the message names the line and the fix."""


def as_field_names(value: str | Iterable[str] | None, what: str) -> list[str]:
    """Field names given as a list (``["question", "context"]``) or, as in signatures, one
    comma-separated string (``"question, context"``; ``"question"`` is one name, never
    its characters). Anything else is a :class:`UsageError` naming ``what``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    if isinstance(value, bytes | Mapping) or not isinstance(value, Iterable):
        raise UsageError(
            f"{what} must be field names (a list like ['question'] or a string like "
            f"'question, context'), got {type(value).__name__}: {value!r}"
        )
    names = list(value)
    wrong = [name for name in names if not isinstance(name, str) or not name.strip()]
    if wrong:
        raise UsageError(f"{what} must be field names (non-empty strings), got {wrong[0]!r}")
    return [name.strip() for name in names]


def load_jsonl(
    path: str | os.PathLike[str],
    inputs: str | Sequence[str] | None = None,
    *,
    labels: str | Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Read one JSON object per line into ``lf.Example`` items.

    Args:
        path: the JSONL file (blank lines are skipped).
        inputs: keys every record must have, marked as the program's inputs: a list, or a
            comma-separated string (``"question, context"``). Without it, examples are
            returned unmarked (call ``.with_inputs`` yourself).
        labels: keys every record must also have (the metric's labels), given like
            ``inputs``. Without it, the first record's non-input keys are the labels and
            every record must have them.
        limit: read at most this many records.
    """
    input_keys = tuple(as_field_names(inputs, "load_jsonl(inputs=...)")) or None
    wanted_labels = tuple(as_field_names(labels, "load_jsonl(labels=...)")) or None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise UsageError(f"load_jsonl(limit=...) must be a whole number, got {limit!r}")
    source = Path(path)
    try:
        # Lines end at "\n" only (a "\r" inside a line is JSON whitespace or an error on
        # that line), so the line numbers in errors are the ones an editor shows.
        handle = source.open(encoding="utf-8", newline="\n")
    except FileNotFoundError:
        raise DataError(f"{source}: no such dataset file") from None
    except OSError as exc:
        raise DataError(f"{source}: cannot open it ({exc.strerror})") from None
    examples: list[Example] = []
    with handle:
        for number, line in enumerate(_lines(handle, source), start=1):
            if not line.strip():
                continue
            record = _record(line, source, number)
            if input_keys is not None:
                missing = [k for k in input_keys if k not in record]
                if missing:
                    raise DataError(
                        f"{source} line {number}: missing input field(s) "
                        f"{', '.join(map(repr, missing))}; "
                        f"the record has {sorted(record)}"
                    )
            if wanted_labels is None:
                wanted_labels = tuple(k for k in record if k not in (input_keys or ()))
                if input_keys is not None and not wanted_labels:
                    raise DataError(
                        f"{source} line {number}: the record has only input fields "
                        f"{sorted(record)}; "
                        "add the label field(s) the metric compares against"
                    )
            missing = [k for k in wanted_labels if k not in record]
            if missing:
                raise DataError(
                    f"{source} line {number}: missing label field(s) "
                    f"{', '.join(map(repr, missing))}; "
                    f"the record has {sorted(record)}"
                )
            example = Example(record)
            examples.append(example.with_inputs(*input_keys) if input_keys else example)
            if limit is not None and len(examples) >= limit:
                break
    if not examples:
        raise DataError(f"{source}: the file has no records (one JSON object per line expected)")
    return examples


def _lines(handle: Iterable[str], source: Path) -> Iterable[str]:
    try:
        yield from handle
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _record(line: str, source: Path, number: int) -> dict[str, Any]:
    from .jsonlimits import TooDeepError, loads_bounded  # loaded with the first data file

    try:
        record = loads_bounded(line)
    except TooDeepError as exc:
        raise DataError(f"{source} line {number}: {exc}; flatten the record") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{source} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
            "each line must be one JSON object"
        ) from None
    if not isinstance(record, dict):
        raise DataError(
            f"{source} line {number}: expected a JSON object, got {type(record).__name__}"
        )
    return record


def split(
    examples: Sequence[Example], *sizes: float | int, seed: int = 0, shuffle: bool = True
) -> list[list[Example]]:
    """Split ``examples`` into parts, shuffled with ``seed`` (same seed, same split).

    Sizes are fractions (``split(data, 0.6, 0.2, 0.2)``) or counts (``split(data, 20, 10)``);
    fractions round down and the last part takes the remainder when they sum to 1.

    >>> train, dev, test = lf.data.split(data, 0.6, 0.2, 0.2, seed=0)
    """
    if not sizes:
        raise UsageError("split(examples, *sizes): give the part sizes, e.g. split(data, 0.8, 0.2)")
    wrong = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int | float)]
    if wrong:
        raise UsageError(
            f"split sizes must be numbers: fractions (0.8, 0.2) or counts (40, 10); got "
            f"{wrong[0]!r} ({type(wrong[0]).__name__})"
        )
    if any(s < 0 for s in sizes):
        raise UsageError(f"split sizes must be positive, got {sizes}")
    items = list(examples)
    total = len(items)
    fractional = all(isinstance(s, float) for s in sizes)
    if fractional:
        if sum(sizes) > 1.0 + 1e-9:
            raise UsageError(f"split fractions sum to {sum(sizes):.3f}; they must sum to at most 1")
        counts = [int(s * total) for s in sizes]
        if abs(sum(sizes) - 1.0) < 1e-9:
            counts[-1] = total - sum(counts[:-1])
    elif all(isinstance(s, int) for s in sizes):
        counts = [int(s) for s in sizes]
        if sum(counts) > total:
            raise UsageError(
                f"split sizes {list(sizes)} need {sum(counts)} examples; there are {total}"
            )
    else:
        raise UsageError("split sizes must be all fractions (0.8, 0.2) or all counts (40, 10)")
    if shuffle:
        random.Random(seed).shuffle(items)
    parts, start = [], 0
    for count in counts:
        parts.append(items[start : start + count])
        start += count
    return parts


def dataset_hash(examples: Iterable[Example]) -> str:
    """A SHA-256 of the records and their input keys, in order (for artifacts and runs)."""
    from .adapters.coerce import _json_default

    digest = hashlib.sha256()
    for example in examples:
        record = {"data": example.to_dict(), "inputs": list(example.input_keys or ())}
        digest.update(
            json.dumps(record, sort_keys=True, ensure_ascii=False, default=_json_default).encode()
        )
        digest.update(b"\n")
    return digest.hexdigest()
