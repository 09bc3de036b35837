"""Artifacts: a compiled program as versioned JSON (never pickle).

An artifact holds the program spec (how to rebuild it), each predictor's state
(signature with per-field JSON schema, instructions, demos, adapter, LM config) and free
``meta`` (target model, scores, optimizer config, dataset hashes). Writes are atomic;
loads validate everything before returning anything; endpoints stored in a file are ignored
unless the caller allows them; credentials are never written.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from ._version import __version__
from .errors import ArtifactError, LMForgeError, UsageError
from .lm.lm import is_secret_key
from .module import Module

__all__ = ["SCHEMA_VERSION", "load", "read_artifact", "save", "write_json_atomic"]

SCHEMA_VERSION = 1
FORMAT = "lmforge.artifact"


@functools.lru_cache(maxsize=1)
def _artifact_model() -> Any:
    """The pydantic model of an artifact file, built on first use (keeps import cheap)."""
    import pydantic

    class _ProgramSpec(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        type: str = pydantic.Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
        config: dict[str, Any] = {}

    class _LMConfig(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        model: str = pydantic.Field(min_length=1)
        model_type: Literal["chat", "text"] | None = None
        defaults: dict[str, Any] = {}
        api_base: str | None = None
        client: str | None = None

    class _PredictorState(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        signature: dict[str, Any]
        demos: list[dict[str, Any]] = []
        adapter: dict[str, Any] | None = None
        lm: _LMConfig | None = None
        config: dict[str, Any] = {}
        # label scoring of closed outputs (lmforge.scoring, lmforge.calibration)
        decode: Literal["auto", "score", "generate"] = "auto"
        calibration: dict[str, Any] | None = None
        demo_selector: _ProgramSpec | None = None

    class _ArtifactFile(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        format: str
        schema_version: int
        lmforge_version: str
        program: _ProgramSpec
        predictors: dict[str, _PredictorState]
        meta: dict[str, Any] = {}
        sha256: str

    return _ArtifactFile


def _digest(body: Mapping[str, Any]) -> str:
    import hashlib

    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def to_artifact(program: Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The artifact document for ``program`` (what :func:`save` writes). Without ``meta``,
    the program's own ``artifact_meta`` (set by optimizers and by ``load``) is written."""
    if meta is None:
        meta = getattr(program, "artifact_meta", None)
    cls = type(program)
    body: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "lmforge_version": __version__,
        "program": {
            "type": f"{cls.__module__}:{cls.__qualname__}",
            "config": program.spec_config(),
        },
        "predictors": program.state(),
        "meta": _scrub(dict(meta or {})),
    }
    try:
        body["sha256"] = _digest(body)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"cannot save {cls.__name__}: {exc}; demos, config and meta must hold JSON values "
            "(str, numbers, bools, None, lists, dicts, pydantic models, enums)"
        ) from None
    return body


def write_json_atomic(path: str | os.PathLike[str], document: Any) -> None:
    """Write ``document`` as JSON to ``path`` atomically (see :mod:`lmforge._atomic`,
    imported on first write to keep ``import lmforge`` light)."""
    from ._atomic import write_json_atomic as write

    write(path, document)


def save(
    program: Module, path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``program`` to ``path`` atomically; returns the path."""
    document = to_artifact(program, meta)
    target = Path(path)
    if target.is_dir():
        raise UsageError(
            f"cannot save to {target}: it is a directory; pass a file path such as "
            f"{target / 'program.json'}"
        )
    try:
        document = _bundled(document, target.parent)
        write_json_atomic(target, document)
    except OSError as exc:
        raise ArtifactError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def _bundled(document: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``document`` with the LoRA adapter files it uses copied next to it (relative paths)."""
    from .lm.lora import bundle_files

    body = bundle_files(document, directory)
    if body == {k: v for k, v in document.items() if k != "sha256"}:
        return document
    return {**body, "sha256": _digest(body)}


def read_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify an artifact file; raises ``ArtifactError`` saying what is wrong."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{source}: no such artifact file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{source}: cannot read it ({exc})") from None
    from .jsonlimits import TooDeepError, loads_bounded  # loaded with the first artifact

    try:
        data = loads_bounded(text)
    except TooDeepError as exc:
        raise ArtifactError(f"{source} is not a valid lmforge artifact: {exc}") from None
    except ValueError as exc:
        raise ArtifactError(f"{source} is not an lmforge artifact (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f'{source} is not an lmforge artifact (no "format": "{FORMAT}")')
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{source} has artifact schema version {version!r}; this lmforge ({__version__}) reads "
            f"version {SCHEMA_VERSION}. Upgrade lmforge or re-export the program."
        )
    import pydantic

    try:
        _artifact_model().model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{source}: invalid artifact at '{where}': {first['msg']}") from None
    body = {k: v for k, v in data.items() if k != "sha256"}
    if _digest(body) != data["sha256"]:
        raise ArtifactError(
            f"{source} was modified after it was written (checksum mismatch); "
            "re-save it from the program or recompile"
        )
    return data


def load(
    path: str | os.PathLike[str],
    *,
    program: Module | None = None,
    allow_endpoints: bool = False,
    trusted_modules: str | Iterable[str] | None = None,
) -> Module:
    """Rebuild a program from an artifact.

    Built-in modules are rebuilt from the JSON alone. A custom ``Module`` subclass (and
    any nested module, tool or function the artifact names) is imported from its recorded
    ``package.module:name`` path only when its module is trusted: lmforge's own, one in
    ``trusted_modules`` (submodules included). Importing runs a module's code, so anything
    else is refused before it is imported. Pass ``program=`` to load the state into an
    instance you built instead (nothing is imported then). ``api_base``
    values stored in the file are ignored unless ``allow_endpoints=True``.
    """
    from .trust import trusted_names, trusting

    trusted = trusted_names(trusted_modules)
    data = read_artifact(path)
    if program is None:
        program = _rebuild(data["program"], path, trusted)
    try:
        from .lm.lora import resolve_files, resolve_meta

        absent = sorted(set(dict(program.named_predictors())) - set(data["predictors"]))
        if absent:
            raise ArtifactError(
                f"it has no state for predictor(s) {absent} of the program; the file is "
                "incomplete: re-save it from the compiled program"
            )
        predictors = resolve_files(data["predictors"], Path(path).parent)
        meta = resolve_meta(dict(data.get("meta") or {}), Path(path).parent)
        with trusting(trusted):  # a predictor's demo selector is imported by class path
            program.load_state(predictors, allow_endpoints=allow_endpoints)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except LMForgeError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    program.artifact_meta = meta  # type: ignore[attr-defined]
    return program


def _rebuild(
    spec: Mapping[str, Any], path: str | os.PathLike[str], trusted: tuple[str, ...]
) -> Module:
    from .trust import import_trusted, trusting

    module_name, _, qualname = str(spec["type"]).partition(":")
    if module_name == "__main__":
        raise ArtifactError(
            f"{path}: the program class {qualname} was defined in a script (__main__); "
            f"build it yourself and pass it: lf.load(path, program={qualname}())"
        )
    with trusting(trusted):
        try:
            obj: Any = import_trusted(module_name, qualname, what="program class")
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        except (ImportError, AttributeError) as exc:
            raise ArtifactError(
                f"{path}: cannot import the program class {spec['type']} ({exc}); install the "
                "package that defines it, or pass program=... to lf.load"
            ) from None
        if not (isinstance(obj, type) and issubclass(obj, Module)):
            raise ArtifactError(f"{path}: {spec['type']} is not an lmforge Module subclass")
        try:  # nested modules, tools and functions are imported under the same trust
            return obj.from_spec_config(spec.get("config") or {})
        except LMForgeError as exc:
            raise ArtifactError(f"{path}: cannot rebuild {spec['type']}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(
                f"{path}: cannot rebuild {spec['type']}: {type(exc).__name__}: {exc}"
            ) from None


def _scrub(value: Any) -> Any:
    """Drop credential-like keys anywhere in a JSON document."""
    if isinstance(value, dict):
        return {
            k: _scrub(v) for k, v in value.items() if not (isinstance(k, str) and is_secret_key(k))
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value
