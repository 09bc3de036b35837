"""The mlflow target: an MLflow pyfunc model folder that ``mlflow models serve`` runs.

    lmforge export out/triage@gpt-4o-mini.json --target mlflow --out triage-mlflow
    mlflow models serve -m triage-mlflow --env-manager local --host 127.0.0.1 --port 5001

The folder is what :func:`lmforge.integrations.mlflow.save_model` writes (MLmodel, the
artifact as data, signature, input example, pinned requirements) plus lmforge's
``manifest.json`` (content hashes) and a README, written like every bundle: all or nothing,
and replaced only with ``--force``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge import __version__
from lmforge.artifact import read_artifact

from .bundle import dumps, manifest_for, write_bundle

if TYPE_CHECKING:
    from .export import ExportOptions, ExportResult

__all__ = ["export_mlflow"]

_README = """# {name}: an MLflow pyfunc model of a compiled lmforge program

Serve it (lmforge and mlflow installed here; `pip install 'lmforge[mlflow]'`):

    mlflow models serve -m . --env-manager local --host 127.0.0.1 --port 5001
    curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
        -d '{{"dataframe_records": [{example}]}}'

or load it in Python: `mlflow.pyfunc.load_model("{name}").predict(pandas_df)`.

The LM is the artifact's ({model}). Point it elsewhere when loading, never in this folder:
`model_config={{"model": ..., "api_base": ..., "api_key_env": "MY_KEY_VAR"}}`, or
`$LMFORGE_PROVIDER_MODEL` / `$LMFORGE_PROVIDER_API_BASE`. The provider key comes from the
environment (e.g. `OPENAI_API_KEY`).
"""


def export_mlflow(
    artifact: Path, out: Path, options: ExportOptions, *, force: bool = False
) -> ExportResult:
    """Write the MLflow model folder for ``artifact`` at ``out``."""
    import json

    from lmforge.integrations.mlflow import save_model

    from .export import ExportResult, _name

    document = read_artifact(artifact)
    name = _name(artifact, options.name)
    with tempfile.TemporaryDirectory(prefix="lmforge-mlflow-") as tmp:
        folder = save_model(artifact, Path(tmp) / "model", trusted_modules=options.trusted_modules)
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
    example = json.loads(files.get("input_example.json", b"{}") or b"{}")
    record = dict(zip(example.get("columns") or [], (example.get("data") or [[]])[0], strict=False))
    meta: dict[str, Any] = dict(document.get("meta") or {})
    model = str(meta.get("target_model") or meta.get("model") or "see the artifact")
    files["README.md"] = _README.format(
        name=name, example=json.dumps(record, ensure_ascii=False), model=model
    ).encode()
    info = {
        "name": name,
        "target": "mlflow",
        "lmforge_version": __version__,
        "engine": {"mlflow": _mlflow_version()},
        "model": model,
        "scores": meta.get("scores") or {},
        "artifact_sha256": document["sha256"],
    }
    manifest = manifest_for(files, info)
    files["manifest.json"] = dumps(manifest).encode()
    path = write_bundle(Path(out), files, force=force)
    return ExportResult(path, manifest, None, ())


def _mlflow_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("mlflow")
