"""Compiled programs as MLflow models (extra ``mlflow``).

    from lmforge.integrations.mlflow import log_model
    info = log_model("out/triage@gpt-4o-mini.json", "triage", registered_model_name="triage")
    mlflow.pyfunc.load_model(info.model_uri).predict(pandas_df)   # one row per input

The model is a pyfunc with lmforge's loader (:mod:`lmforge.integrations.mlflow_pyfunc`):
the artifact JSON is its data file (no pickle), its signature comes from the program's
signature, its input example from the artifact's demos, and its requirements pin the running
lmforge. No credential is written: the LM's key comes from the environment where the model
is loaded. MLflow is imported only when one of these functions is called.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.errors import MissingExtraError, UsageError

from .mlflow_pyfunc import ARTIFACT_FILE, DEFAULT_CONFIG, SETTINGS_FILE
from .mlflow_tracking import MlflowRun, default_tracking_uri

__all__ = [
    "MlflowRun",
    "default_tracking_uri",
    "log_model",
    "model_signature",
    "require_mlflow",
    "save_model",
]

LOADER_MODULE = "lmforge.integrations.mlflow_pyfunc"


def require_mlflow() -> Any:
    """The ``mlflow`` module, or :class:`MissingExtraError` naming the extra."""
    try:
        import mlflow
        import mlflow.models
        import mlflow.pyfunc
    except ImportError:
        raise MissingExtraError("mlflow", "mlflow", "MLflow logging") from None
    return mlflow


def log_model(
    program_or_artifact: lf.Module | str | Path,
    name: str,
    registered_model_name: str | None = None,
    *,
    input_example: Mapping[str, Any] | None = None,
    trusted_modules: Sequence[str] = (),
) -> Any:
    """Log a compiled program (an ``lf.Module`` or an artifact path) to the active MLflow run
    (one is started when none is) as a pyfunc model; returns MLflow's ``ModelInfo``.

    ``registered_model_name`` also registers a new version of that model. ``trusted_modules``
    are the modules the artifact's program class may be imported from (as ``lf.load``'s),
    for programs of user code; that code must be importable where the model is loaded.
    """
    mlflow = require_mlflow()
    with _model_data(program_or_artifact, trusted_modules) as (data, program):
        # mlflow.pyfunc.log_model is Model.log with the pyfunc flavour; called here with a
        # flavour that takes validate_serving_input=False (as mlflow's transformers flavour
        # does): checking the example would call the LM while logging (cost, a key).
        return mlflow.models.Model.log(
            artifact_path=None,
            name=name,
            flavor=_PyfuncFlavor(mlflow),
            loader_module=LOADER_MODULE,
            data_path=str(data),
            **_model_parts(program, input_example),
            registered_model_name=registered_model_name,
            validate_serving_input=False,
        )


def save_model(
    program_or_artifact: lf.Module | str | Path,
    path: str | Path,
    *,
    input_example: Mapping[str, Any] | None = None,
    trusted_modules: Sequence[str] = (),
) -> Path:
    """Write the pyfunc model folder at ``path`` (must not exist), runnable with
    ``mlflow models serve -m PATH --env-manager local``; returns ``path``."""
    mlflow = require_mlflow()
    target = Path(path)
    if target.exists():
        raise UsageError(f"{target} already exists; remove it or choose another folder")
    with _model_data(program_or_artifact, trusted_modules) as (data, program):
        mlflow.pyfunc.save_model(
            str(target),
            loader_module=LOADER_MODULE,
            data_path=str(data),
            **_model_parts(program, input_example),
        )
    return target


class _PyfuncFlavor:
    """The pyfunc flavour for ``Model.log``, without MLflow's serving-input check."""

    __name__ = "mlflow.pyfunc"

    def __init__(self, mlflow: Any) -> None:
        self._mlflow = mlflow

    def save_model(self, path: str, validate_serving_input: bool = False, **kwargs: Any) -> None:
        """``mlflow.pyfunc.save_model``; ``validate_serving_input`` is Model.log's switch,
        which it passes on to the flavour with the rest."""
        self._mlflow.pyfunc.save_model(path, **kwargs)


@contextmanager
def _model_data(
    program_or_artifact: lf.Module | str | Path, trusted_modules: Sequence[str]
) -> Iterator[tuple[Path, lf.Module]]:
    """A temporary data folder (artifact + loader settings) and the program it loads to."""
    with tempfile.TemporaryDirectory(prefix="lmforge-mlflow-") as tmp:
        data = Path(tmp) / "lmforge"
        data.mkdir()
        artifact = data / ARTIFACT_FILE
        if isinstance(program_or_artifact, lf.Module):
            program_or_artifact.save(artifact)
        elif isinstance(program_or_artifact, str | Path):
            source = Path(program_or_artifact)
            if not source.is_file():
                raise UsageError(f"{source}: no such artifact file")
            shutil.copyfile(source, artifact)
        else:
            raise UsageError(
                "log_model() takes a compiled lf.Module or an artifact path, "
                f"not {type(program_or_artifact).__name__}"
            )
        # Load it as the model will be loaded: a broken artifact fails here, not in serving.
        program = lf.load(artifact, trusted_modules=tuple(trusted_modules))
        settings = {"format": "lmforge.pyfunc", "version": 1, "trusted_modules": [*trusted_modules]}
        (data / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        yield data, program


def _model_parts(program: lf.Module, input_example: Mapping[str, Any] | None) -> dict[str, Any]:
    from lmforge.targets.program import program_signature

    signature = program_signature(program)
    example = dict(input_example) if input_example is not None else _example(program)
    return {
        "signature": model_signature(signature),
        "input_example": _frame(example),
        "pip_requirements": _requirements(),
        # Written into MLmodel, so: no credentials. MLflow passes a load-time model_config
        # on to the loader only when the model was saved with one.
        "model_config": dict(DEFAULT_CONFIG),
    }


def model_signature(signature: lf.Signature) -> Any:
    """An MLflow ``ModelSignature`` with a column per input and output field, typed from the
    fields' JSON schemas (text, numbers, booleans, lists of those; anything else: any)."""
    require_mlflow()
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    def columns(fields: Sequence[Any]) -> Any:
        specs: list[Any] = []
        for field in fields:
            kind, required = _column_type(field.to_json()["schema"])
            specs.append(ColSpec(kind, field.name, required=required and not field.has_default))
        return Schema(specs)

    return ModelSignature(
        inputs=columns(signature.input_fields), outputs=columns(signature.output_fields)
    )


_SCALARS = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean"}


def _column_type(schema: Mapping[str, Any]) -> tuple[Any, bool]:
    """The MLflow column type of a field's JSON schema, and whether a value is required."""
    from mlflow.types.schema import AnyType, Array, DataType

    options = schema.get("anyOf")
    if isinstance(options, list):  # Optional[X]: X, not required
        kinds = [o for o in options if o.get("type") != "null"]
        if len(kinds) == 1 and len(kinds) < len(options):
            return _column_type(kinds[0])[0], False
        return AnyType(), True
    kind = schema.get("type")
    if kind in _SCALARS:
        return DataType[_SCALARS[kind]], True
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return DataType.string, True
    if kind == "array" and schema.get("items", {}).get("type") in _SCALARS:
        return Array(DataType[_SCALARS[schema["items"]["type"]]]), True
    return AnyType(), True


def _example(program: lf.Module) -> dict[str, Any]:
    """Inputs of a real row when the artifact has one (dev rows, else a demo), else
    placeholders of the right types."""
    from lmforge.targets.program import program_signature

    names = [f.name for f in program_signature(program).input_fields]
    meta = getattr(program, "artifact_meta", None) or {}
    rows = [r for r in meta.get("devset") or [] if isinstance(r, Mapping)]
    predictors = program.predictors()
    rows += [dict(d) for d in (predictors[0].demos if predictors else [])]
    for row in rows:
        if all(n in row for n in names):
            return {n: row[n] for n in names}
    placeholders = {"integer": 1, "number": 1.0, "boolean": True, "array": ["example"]}
    example = {}
    for field in program_signature(program).input_fields:
        schema = field.to_json()["schema"]
        value = schema["enum"][0] if schema.get("enum") else None
        example[field.name] = (
            value if value is not None else placeholders.get(str(schema.get("type")), "example")
        )
    return example


def _frame(example: Mapping[str, Any]) -> Any:
    import pandas as pd

    # One row; list cells must be wrapped so pandas does not spread them over rows.
    return pd.DataFrame([dict(example)])


def _requirements() -> list[str]:
    import importlib.metadata

    # lmforge as installed now (its extras are not needed to call a provider or the server)
    requirements = [f"lmforge=={lf.__version__}"]
    for package in ("mlflow", "pandas"):
        try:
            requirements.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return requirements
