"""LoRA adapter files referenced by ``local/...`` LMs and carried by artifacts.

``lf.LM("local/gemma-3-270m", lora="adapter.gguf")`` runs the base model with a GGUF LoRA
(llama.cpp ``lora_path``). The adapter's sha256 is part of every request's parameters, so
cached answers of the base model (or of another adapter) are never reused for it.

When a program whose predictors use such an LM is saved, :func:`bundle_files` copies each
adapter next to the artifact, into ``adapters/<sha12>/``, and records the path relative to
the artifact together with its sha256; :func:`resolve_files` turns those paths back into
absolute ones on load and checks the files are present and unchanged. The PEFT adapter
folder a fine-tune produced (``meta.finetune.adapter_path``) travels the same way, for
deploy targets that serve LoRA modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..artifact_paths import confined_path
from ..errors import ArtifactError, UsageError

__all__ = ["bundle_files", "file_digest", "resolve_files", "resolve_meta"]

_BLOCK = 1 << 20
_digests: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, or of a folder's files (names and contents, sorted by name);
    remembered per (path, size, mtime)."""
    source = Path(path)
    try:
        stat = source.stat()
    except OSError:
        raise UsageError(
            f"no LoRA adapter at {source}; pass the path of an existing adapter file"
        ) from None
    key = (str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _digests.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for file in files:
        if source.is_dir():
            digest.update(file.relative_to(source).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while block := handle.read(_BLOCK):
                digest.update(block)
    value = digest.hexdigest()
    with _lock:
        _digests[key] = value
    return value


def _copy(source: Path, directory: Path, digest: str) -> str:
    """Copy ``source`` (file or folder) into ``directory/adapters/<sha12>/``; the relative path."""
    relative = Path("adapters") / digest[:12] / source.name
    target = directory / relative
    if target.resolve() == source.resolve() or (target.exists() and file_digest(target) == digest):
        return relative.as_posix()
    with atomic_path(target) as staging:
        if source.is_dir():
            shutil.copytree(source, staging)
        else:
            shutil.copy2(source, staging)
    return relative.as_posix()


def bundle_files(document: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Copy the adapter files ``document`` references next to it (into ``directory``) and
    make those references relative. Returns the changed document (without ``sha256``)."""
    body = {k: v for k, v in document.items() if k != "sha256"}
    predictors = {}
    for name, state in body.get("predictors", {}).items():
        lm = state.get("lm") if isinstance(state, Mapping) else None
        if isinstance(lm, Mapping) and lm.get("lora"):
            source = Path(str(lm["lora"]))
            if not source.is_absolute():
                raise UsageError(
                    f"predictor {name}: its LoRA path {source} must be absolute to be saved"
                )
            digest = file_digest(source)
            state = {
                **state,
                "lm": {**lm, "lora": _copy(source, directory, digest), "lora_sha256": digest},
            }
        predictors[name] = state
    if predictors:
        body["predictors"] = predictors
    meta = body.get("meta")
    finetune = meta.get("finetune") if isinstance(meta, Mapping) else None
    if isinstance(finetune, Mapping) and finetune.get("adapter_path"):
        source = Path(str(finetune["adapter_path"]))
        if source.is_absolute() and source.exists():
            digest = file_digest(source)
            finetune = {
                **finetune,
                "adapter_path": _copy(source, directory, digest),
                "adapter_sha256": digest,
            }
            body["meta"] = {**meta, "finetune": finetune}  # type: ignore[dict-item]
    return body


def resolve_files(predictors: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """Predictor states with relative LoRA paths made absolute against ``directory``; each
    adapter must exist and match its recorded sha256 (else :class:`ArtifactError`)."""
    resolved: dict[str, Any] = {}
    for name, state in predictors.items():
        lm = state.get("lm") if isinstance(state, Mapping) else None
        if isinstance(lm, Mapping) and lm.get("lora"):
            # Saving always stores adapters under the artifact's folder.
            path = confined_path(lm["lora"], directory, what=f"predictor {name}: its LoRA path")
            if not path.exists():
                raise ArtifactError(
                    f"predictor {name}: its LoRA adapter {path} is missing; keep the adapters/ "
                    "folder next to the artifact (copy both together)"
                )
            expected = lm.get("lora_sha256")
            if expected and file_digest(path) != expected:
                raise ArtifactError(
                    f"predictor {name}: the LoRA adapter {path} changed after the artifact was "
                    "saved (sha256 mismatch); restore it or recompile"
                )
            state = {**state, "lm": {**lm, "lora": str(path)}}
        resolved[name] = state
    return resolved


def resolve_meta(meta: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``meta`` with its adapter paths confined to ``directory``; an existing
    ``finetune.adapter_path`` is made absolute (so saving the loaded program elsewhere
    carries the adapter folder along), a missing one stays as recorded."""
    if meta.get("adapter_path"):
        confined_path(meta["adapter_path"], directory, what="meta.adapter_path")
    finetune = meta.get("finetune")
    if isinstance(finetune, Mapping) and finetune.get("adapter_path"):
        path = confined_path(finetune["adapter_path"], directory, what="meta.finetune.adapter_path")
        if path.exists():
            return {**meta, "finetune": {**finetune, "adapter_path": str(path)}}
    return meta
