"""Rows of a batch run: the program's inputs in, its declared outputs plus ``error`` out.

Shared by ``lmforge batch`` and the Spark UDF so both paths produce the same table: one
column per output field of the program's signature (the signature a server exposes, see
:func:`lmforge.targets.program.program_signature`) and an ``error`` column. A failed row has
its error filled and every output null; no row is ever dropped.

Output columns are typed by the field's JSON schema: strings, integers, numbers and
booleans keep their type; anything else (lists, objects, unions) is JSON text, so every
engine (Arrow, Spark, pandas) can hold it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lmforge import Module, Prediction, Signature
from lmforge.errors import UsageError
from lmforge.module import BatchError

__all__ = ["ERROR_COLUMN", "Column", "OutputTable", "plain_value"]

ERROR_COLUMN = "error"

Kind = Literal["string", "integer", "number", "boolean", "json"]
_SCALARS: dict[str, Kind] = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
}


@dataclass(frozen=True)
class Column:
    """One output column: its name and the kind of value it holds."""

    name: str
    kind: Kind


class OutputTable:
    """The columns a program's batch outcomes fill, and the row of each outcome."""

    def __init__(self, program: Module) -> None:
        from lmforge.targets.program import program_signature

        self.signature: Signature = program_signature(program)
        self.inputs = [f.name for f in self.signature.input_fields]
        self.columns = [
            Column(f.name, _kind(f.annotation)) for f in self.signature.output_fields
        ] + [Column(ERROR_COLUMN, "string")]
        if ERROR_COLUMN in {f.name for f in self.signature.output_fields}:
            raise UsageError(
                f"the program has an output field named {ERROR_COLUMN!r}, the column that "
                "holds each row's error in a batch run; rename the output field"
            )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def row(self, outcome: Prediction | BatchError) -> dict[str, Any]:
        """The outputs of a prediction, or nulls and the error of a failed item."""
        empty: dict[str, Any] = dict.fromkeys(self.names)
        if isinstance(outcome, BatchError):
            empty[ERROR_COLUMN] = _error_text(outcome.error)
            return empty
        from lmforge.targets.program import response_payload

        try:
            payload = response_payload(self.signature, outcome)
        except Exception as exc:  # an output that cannot be written is that row's error
            empty[ERROR_COLUMN] = _error_text(exc)
            return empty
        row = {c.name: _cell(c.kind, payload.get(c.name)) for c in self.columns[:-1]}
        row[ERROR_COLUMN] = None
        return row


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _kind(annotation: Any) -> Kind:
    import pydantic

    try:
        schema = pydantic.TypeAdapter(annotation).json_schema()
    except Exception:  # a type pydantic cannot describe is still written, as JSON text
        return "json"
    return _SCALARS.get(str(schema.get("type")), "json")


def _cell(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if kind == "number":
        return float(value)
    return value


def plain_value(value: Any) -> Any:
    """A value read from Arrow or pandas as plain Python: numpy arrays become lists, numpy
    scalars Python numbers, nested rows dicts, and nulls (None, NaN, NA) None."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    module = type(value).__module__
    if module.startswith("numpy") and hasattr(value, "tolist"):  # arrays and scalars alike
        return plain_value(value.tolist())
    if module.startswith("pandas"):
        if type(value).__name__ in ("NAType", "NaTType"):
            return None
        if hasattr(value, "to_pydatetime"):
            return value.to_pydatetime()
    return value
