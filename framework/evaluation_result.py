"""An evaluation's result: one :class:`EvaluationRow` per example and the
:class:`EvaluationResult` summing them up, shown as a rich table in the terminal
(:meth:`EvaluationResult.display`) or written to CSV or JSON files
(:meth:`EvaluationResult.save`): each row with the example's inputs, the prediction's
outputs, the gold labels, the score and the error of a failed example.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._atomic import write_json_atomic, write_text_atomic
from .adapters.coerce import render_value
from .errors import UsageError
from .example import Example, Prediction

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["EvaluationResult", "EvaluationRow", "row_record"]

#: Characters of one value shown in a table cell (files keep every character).
_CELL = 120
_FILE_WIDTH = 160
_PREFIXES = (("inputs", "input"), ("outputs", "output"), ("gold", "gold"))  # CSV columns
_HEADINGS = {"inputs": "{}", "outputs": "{} (pred)", "gold": "{} (gold)"}


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationRow:
    """One example's outcome: its prediction and score, or the error it failed with."""

    index: int
    example: Example
    prediction: Prediction | None
    score: float
    error_type: str | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_type is not None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "index": self.index,
                "example": self.example.to_dict(),
                "prediction": self.prediction.to_dict() if self.prediction is not None else None,
                "score": self.score,
                "error_type": self.error_type,
                "error": self.error,
                **_trust(self.prediction),
            }
        )


@dataclasses.dataclass(frozen=True, slots=True)
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes:
        score: mean score over every example, failures included (as ``failure_score``).
        rows: one :class:`EvaluationRow` per example, in dataset order.
        usage: LM usage of the run: ``calls``, ``lm_calls`` (backend), ``retries``
            (backend requests that retried a failed one), ``cache_hits``, ``errors``,
            ``prompt_tokens``, ``completion_tokens``, ``cost_usd``.
        metric: the metric's name.
    """

    score: float
    rows: tuple[EvaluationRow, ...]
    usage: Mapping[str, Any]
    metric: str = "metric"

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def scores(self) -> list[float]:
        return [row.score for row in self.rows]

    @property
    def failures(self) -> list[EvaluationRow]:
        """Rows whose program call or metric raised."""
        return [row for row in self.rows if row.failed]

    @property
    def num_failures(self) -> int:
        return sum(1 for row in self.rows if row.failed)

    @property
    def percent(self) -> float:
        return round(100.0 * self.score, 2)

    def summary(self) -> str:
        """One line: score, example count, failures and usage."""
        cost = self.usage.get("cost_usd")
        money = f" · ${cost:.4f}" if cost else ""
        retries = self.usage.get("retries")
        retried = f" (+{retries} retries)" if retries else ""
        return (
            f"{self.metric}: {self.percent:.1f}% on {self.n} example(s) · "
            f"{self.num_failures} failed · "
            f"{self.usage.get('lm_calls', 0)} LM call(s){retried}, "
            f"{self.usage.get('cache_hits', 0)} cached{money}"
        )

    def to_dict(self, *, rows: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "metric": self.metric,
            "score": self.score,
            "n": self.n,
            "failures": self.num_failures,
            "usage": dict(self.usage),
        }
        if rows:
            data["rows"] = [row.to_dict() for row in self.rows]
        return data

    def display(self, n: int | None = 10, *, file: IO[str] | None = None) -> None:
        """Print the first ``n`` rows (``None``: all) as a table: inputs, predicted
        outputs, gold labels and score, failures marked with their error; then the
        summary line. ``file`` defaults to stdout."""
        _display(self, n, file)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write every row (inputs, outputs, gold, score, error) to ``path`` atomically, as
        ``.csv`` or ``.json`` (with the summary) by its suffix."""
        _save(self, path)

    def __float__(self) -> float:
        return self.score

    def __repr__(self) -> str:
        return f"EvaluationResult({self.summary()})"


def row_record(row: EvaluationRow) -> dict[str, Any]:
    """One example's ``index``, ``inputs``, ``outputs`` (``None`` when the program
    raised), ``gold`` labels, ``score`` and ``error`` (``"Type: message"`` or ``None``);
    plus ``confidence`` and ``light`` when the prediction carries a confidence."""
    example = row.example
    return {
        "index": row.index,
        "inputs": dict(example.inputs()),
        "outputs": row.prediction.to_dict() if row.prediction is not None else None,
        "gold": dict(example.labels()),
        "score": row.score,
        "error": f"{row.error_type}: {row.error}" if row.failed else None,
        **_trust(row.prediction),
    }


def _trust(prediction: Prediction | None) -> dict[str, Any]:
    """A prediction's ``confidence`` and ``light``, when it has them (not output fields)."""
    confidence = prediction.confidence if prediction is not None else None
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return {}  # unknown, or an output field of that name holding something else
    return {"confidence": confidence, "light": prediction.light if prediction else None}


def _save(result: EvaluationResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result``'s rows to ``path`` atomically: ``.json`` (the summary and one
    record per row) or ``.csv`` (one line per row, a column per field)."""
    target = Path(path)
    suffix = target.suffix.lower()
    records = [row_record(row) for row in result.rows]
    if suffix == ".json":
        write_json_atomic(target, _jsonable({**result.to_dict(rows=False), "rows": records}))
    elif suffix == ".csv":
        write_text_atomic(target, _csv_text(records))
    else:
        raise UsageError(
            f"cannot save evaluation results as {target.name!r}: use a .csv or .json file name"
        )
    return target


def _csv_text(records: list[dict[str, Any]]) -> str:
    columns = ["index"]
    for part, prefix in _PREFIXES:
        names = dict.fromkeys(k for r in records for k in (r[part] or {}))
        columns += [f"{prefix}.{name}" for name in names]
    columns += ["score", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        line: dict[str, Any] = {"index": record["index"], "score": record["score"]}
        line["error"] = record["error"] or ""
        for part, prefix in _PREFIXES:
            for name, value in (record[part] or {}).items():
                line[f"{prefix}.{name}"] = render_value(value)
        writer.writerow(line)
    return buffer.getvalue()


def _display(result: EvaluationResult, n: int | None = None, file: IO[str] | None = None) -> None:
    """Print ``result``'s first ``n`` rows (all when ``None``) as a table, failures marked,
    then its summary line, to ``file`` (default: stdout)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise UsageError(f"display(n=...) must be a whole number of rows (or None), got {n!r}")
    rows = result.rows if n is None else result.rows[:n]
    records = [row_record(row) for row in rows]
    table = Table(title=f"{result.metric}: {result.percent:.1f}% on {result.n} example(s)")
    table.add_column("#", justify="right")
    parts = {}
    for part, style in (("inputs", None), ("outputs", "cyan"), ("gold", "green")):
        parts[part] = list(dict.fromkeys(k for r in records for k in (r[part] or {})))
        for name in parts[part]:
            table.add_column(_HEADINGS[part].format(name), style=style, overflow="fold")
    table.add_column("score", justify="right")
    for record in records:
        cells: list[Text] = [Text(str(record["index"]))]
        for part, names in parts.items():
            values: Mapping[str, Any] = record[part] or {}
            cells += [_cell(values[k]) if k in values else Text("") for k in names]
        if record["error"] is not None:
            cells.append(Text(f"✗ {record['score']:.2f} {_short(record['error'])}", "red"))
        else:
            cells.append(Text(f"{record['score']:.2f}"))
        table.add_row(*cells)
    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal and not console.is_jupyter:
        console.width = _FILE_WIDTH  # a log or file: rich's 80 columns would fold every cell
    console.print(table)
    hidden = result.n - len(rows)
    if hidden > 0:
        console.print(f"... {hidden} more row(s); result.display(n=None) shows all", markup=False)
    console.print(result.summary(), markup=False)


def _cell(value: Any) -> Text:
    from rich.text import Text  # values are shown as they are, never as rich markup

    return Text(_short(render_value(value)))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def _jsonable(value: Any) -> Any:
    from .adapters.coerce import _json_default

    return json.loads(json.dumps(value, ensure_ascii=False, default=_json_default))
