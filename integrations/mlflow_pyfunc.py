"""The loader of lmforge's MLflow pyfunc models (``loader_module`` of the flavour).

``mlflow.pyfunc.load_model(uri)`` imports this module and calls
``_load_pyfunc(data_path, model_config)``; ``mlflow models serve`` and
``mlflow.pyfunc.spark_udf`` do the same in their own processes. The model folder holds the
compiled artifact as JSON (no pickle) and a small settings file; the program is rebuilt with
``lf.load`` on load.

The LM is the artifact's. It can be changed at load time, never by a key written into the
model: ``model_config={"model": ..., "api_base": ..., "api_key_env": ...}`` or the
environment (``$LMFORGE_PROVIDER_MODEL``, ``$LMFORGE_PROVIDER_API_BASE``); the provider key
comes from the environment (the provider's usual variable, or the one ``api_key_env``
names). MLflow itself is not imported here: the module needs only lmforge and pandas.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import UsageError

if TYPE_CHECKING:
    import lmforge as lf
    import pandas as pd

__all__ = ["API_BASE_ENV", "ARTIFACT_FILE", "MODEL_ENV", "SETTINGS_FILE", "ProgramModel"]

ARTIFACT_FILE = "program.json"
SETTINGS_FILE = "lmforge_pyfunc.json"
MODEL_ENV = "LMFORGE_PROVIDER_MODEL"
API_BASE_ENV = "LMFORGE_PROVIDER_API_BASE"
# What model_config may hold; a key itself is refused (it would end up in MLmodel or logs).
# The model_config a model is saved with: MLflow lets a load-time model_config set only the
# keys the saved one has. None: the artifact's value (or the environment's).
DEFAULT_CONFIG: dict[str, Any] = {
    "model": None,
    "api_base": None,
    "api_key_env": None,
    "allow_endpoints": False,
    "concurrency": 4,
}


def _load_pyfunc(data_path: str, model_config: Mapping[str, Any] | None = None) -> ProgramModel:
    """Rebuild the program from the model's data folder (called by MLflow)."""
    import lmforge as lf

    folder = Path(data_path)
    settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    config = _check_config({**DEFAULT_CONFIG, **(model_config or {})})
    program = lf.load(
        folder / ARTIFACT_FILE,
        allow_endpoints=bool(config.get("allow_endpoints", False)),
        trusted_modules=tuple(settings.get("trusted_modules") or ()),
    )
    _point_lms(program, config)
    return ProgramModel(program, concurrency=int(config["concurrency"]))


def _check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        hint = (
            "; pass the key's variable name as api_key_env instead"
            if any("key" in k.lower() and k != "api_key_env" for k in unknown)
            else ""
        )
        raise UsageError(
            f"unknown lmforge model_config key(s) {', '.join(unknown)}; "
            f"use {', '.join(DEFAULT_CONFIG)}{hint}"
        )
    concurrency = config.get("concurrency", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(
            f"model_config concurrency must be a whole number of at least 1, got {concurrency!r}"
        )
    return dict(config)


def _point_lms(program: lf.Module, config: Mapping[str, Any]) -> None:
    """Apply the model/endpoint/key overrides (model_config first, then the environment)."""
    import lmforge as lf

    model = config.get("model") or os.environ.get(MODEL_ENV) or None
    api_base = config.get("api_base") or os.environ.get(API_BASE_ENV) or None
    key_env = config.get("api_key_env")
    api_key = None
    if key_env:
        api_key = os.environ.get(str(key_env))
        if not api_key:
            raise UsageError(f"model_config api_key_env names ${key_env}, which is not set")
    if model is None and api_base is None and api_key is None:
        return
    for name, predictor in program.named_predictors():
        stored = predictor.lm.config() if predictor.lm is not None else {}
        target = model or stored.get("model")
        if not target:
            raise UsageError(
                f"predictor {name} has no model in the artifact; pass "
                f"model_config={{'model': ...}} or set ${MODEL_ENV}"
            )
        same = target == stored.get("model")
        predictor.lm = lf.LM(
            str(target),
            # a new model brings its own prompt style (chat or text)
            model_type=stored.get("model_type") if same else None,
            api_base=api_base or stored.get("api_base"),
            api_key=api_key,
            client=stored.get("client") or "auto",
            lora=stored.get("lora") if same else None,
            **(stored.get("defaults") or {}),
        )


class ProgramModel:
    """A compiled program as a pyfunc model: one output row per input row."""

    def __init__(self, program: lf.Module, *, concurrency: int = 4) -> None:
        from lmforge.targets.program import program_signature

        self.program = program
        self.signature = program_signature(program)
        self.concurrency = concurrency

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Call the program on each row of ``model_input`` (a DataFrame, a dict or a list of
        dicts with the input fields as columns); a DataFrame of the output fields, typed
        (numbers stay numbers, lists and objects stay JSON values), in input order."""
        import pandas as pd
        from lmforge.targets.program import response_payload

        rows = self._rows(model_input)
        names = [f.name for f in self.signature.output_fields]
        if not rows:
            return pd.DataFrame(columns=names)
        predictions = self.program.batch(
            rows, concurrency=min(self.concurrency, len(rows)), raise_errors=True
        )
        payloads = [response_payload(self.signature, p) for p in predictions]  # type: ignore[arg-type]
        return pd.DataFrame(payloads, columns=names)

    def _rows(self, model_input: Any) -> list[dict[str, Any]]:
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            records = model_input.to_dict(orient="records")
        elif isinstance(model_input, Mapping):
            records = [dict(model_input)]
        elif isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
            records = [dict(r) for r in model_input]
        else:
            raise UsageError(
                f"predict() takes a pandas DataFrame (or dicts) with the input columns, "
                f"not {type(model_input).__name__}"
            )
        fields = self.signature.input_fields
        rows = []
        for number, record in enumerate(records):
            row = {}
            for field in fields:
                if field.name in record and not _missing(record[field.name]):
                    row[field.name] = _native(record[field.name])
                elif not field.has_default:
                    raise UsageError(
                        f"input row {number} has no {field.name!r}; the model takes "
                        f"{', '.join(f.name for f in fields)}"
                    )
            rows.append(row)
        return rows


def _missing(value: Any) -> bool:
    # pandas fills absent cells with None or NaN; a list cell is never "missing"
    return value is None or (isinstance(value, float) and value != value)


def _native(value: Any) -> Any:
    """Plain Python values from what pandas/Spark hand over (numpy arrays and scalars)."""
    if hasattr(value, "tolist"):  # numpy arrays and numpy scalars
        return _native(value.tolist())
    if isinstance(value, list | tuple):
        return [_native(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _native(v) for k, v in value.items()}
    return value
