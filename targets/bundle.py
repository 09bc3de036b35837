"""Bundles on disk: atomic writing, the manifest, verification, and loading for serving."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import lmforge as lf
from lmforge._atomic import STALE_AFTER_S, atomic_path, restore_aside
from lmforge.errors import ArtifactError, UsageError
from lmforge.lm.profiles import profile_for

from .config import ReadinessCheck, ServerConfig, api_keys_from_env
from .serving_file import (
    BUNDLE_LIMIT_KEYS,
    answer_options,
    bundle_limits,
    bundle_request_log,
    read_serving,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_LIMIT_KEYS",
    "bundle_limits",
    "is_bundle_path",
    "load_bundle",
    "manifest_for",
    "read_serving",
    "verify_bundle",
    "write_bundle",
]

BUNDLE_FORMAT = "lmforge.bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
SOURCE_DIR = "program_source"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def dumps(document: Any) -> str:
    """Deterministic JSON text (files must be byte-identical across exports)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def manifest_for(files: Mapping[str, bytes], info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        **info,
        "files": {path: hashlib.sha256(files[path]).hexdigest() for path in sorted(files)},
    }


def write_bundle(out: Path, files: Mapping[str, bytes], *, force: bool = False) -> Path:
    """Write ``files`` (relative path -> bytes) as a bundle at ``out``, all or nothing.

    A non-empty ``out`` is refused unless ``force`` and it is a bundle itself; the bundle is
    built in a temporary folder next to ``out`` and swapped into place, so a bundle already
    at ``out`` stays there until the new one is complete.
    """
    out = Path(out)
    outside = [relative for relative in files if not is_bundle_path(relative)]
    if outside:
        raise ArtifactError(
            f"refusing to write {outside[0]!r}: bundle files must stay inside the bundle "
            "(a relative path without '..')"
        )
    try:
        _check_replaceable(out, force)
        with atomic_path(out) as staging:
            staging.mkdir()
            for relative, data in sorted(files.items()):
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                if relative.endswith(".py") or relative.endswith(".sh"):
                    path.chmod(0o755)
    except OSError as exc:
        raise ArtifactError(f"cannot write the bundle {out}: {exc.strerror or exc}") from None
    return out


def _check_replaceable(out: Path, force: bool) -> None:
    """Refuse to write over anything but an empty folder, or (with ``force``) a bundle.

    A bundle that a killed export left renamed aside is put back first.
    """
    here = Path.cwd().resolve()
    where = out.resolve()
    if where == here or where in here.parents:
        raise UsageError(
            f"cannot write a bundle at {out}: it is the current directory or one above it; "
            "pass a new folder as --out, such as --out ./bundle"
        )
    _tidy_legacy(out)
    restore_aside(out)
    if not os.path.lexists(out) or (out.is_dir() and not any(out.iterdir())):
        return
    if not _is_bundle(out):
        raise UsageError(
            f"{out} exists and is not an lmforge bundle (no lmforge {MANIFEST}); "
            "choose another --out (--force only replaces a bundle)"
        )
    if not force:
        raise UsageError(
            f"{out} exists and is not empty; pass --force to replace it, or choose another --out"
        )


def _tidy_legacy(out: Path) -> None:
    """Deal with what earlier lmforge versions left when killed mid-export: the old bundle
    renamed aside as ``.NAME.old-PID`` (put back if ``out`` is missing, else removed) and
    staging folders ``.NAME.tmp-XXXXXXXX`` (removed once stale)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:(?P<old>old-\d+)|tmp-\w{{8}})")
    entries = sorted(out.parent.iterdir()) if out.parent.is_dir() else []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or not entry.is_dir() or entry.is_symlink():
            continue
        if match["old"] and not os.path.lexists(out):
            os.rename(entry, out)
        elif match["old"] or time.time() - entry.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(entry, ignore_errors=True)


def _is_bundle(directory: Path) -> bool:
    """Whether ``directory`` holds an lmforge bundle manifest (damaged files or not)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == BUNDLE_FORMAT


def verify_bundle(directory: Path) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest or raises ArtifactError.

    A bundle that an interrupted ``export --force`` left renamed aside is first put back.
    """
    restore_aside(Path(directory))
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"{directory} is not an lmforge bundle (no {MANIFEST}); "
            "create one with `lmforge export`"
        ) from None
    except ValueError as exc:
        raise ArtifactError(f"{directory / MANIFEST} is not valid JSON ({exc})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != BUNDLE_FORMAT
        or manifest.get("version") != BUNDLE_VERSION
    ):
        raise ArtifactError(
            f"{directory} holds a bundle format this lmforge cannot read; re-export it"
        )
    listed = _manifest_files(directory, manifest.get("files"))
    for relative, digest in listed.items():
        path = directory / relative
        if not path.is_file():
            raise ArtifactError(f"bundle file {relative} is missing; re-export the bundle")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ArtifactError(
                f"bundle file {relative} was modified after export (sha256 mismatch); re-export it"
            )
    _refuse_unlisted_source(directory, listed)
    return manifest


def _refuse_unlisted_source(directory: Path, listed: Mapping[str, str]) -> None:
    """Refuse files under ``program_source/`` that the manifest does not list.

    That folder goes on ``sys.path`` when the bundle is served, so a file added there after
    export (``program_source/litellm.py``) would run as code without failing the hashes.
    Python's own ``__pycache__`` folders are allowed. Other unlisted files (a wheel placed
    next to the Dockerfile) are never imported and are left alone.
    """
    source = directory / SOURCE_DIR
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if "__pycache__" in path.relative_to(source).parts:
            continue
        if path.is_dir() and not path.is_symlink():
            continue
        if relative not in listed:
            raise ArtifactError(
                f"bundle file {relative} is not in the bundle's manifest (added after export); "
                f"files under {SOURCE_DIR}/ are imported when serving: remove it, or re-export "
                "the bundle"
            )


def _manifest_files(directory: Path, files: Any) -> dict[str, str]:
    """The manifest's ``files``: bundle-relative paths mapped to sha256 hex digests."""
    where = f"{directory / MANIFEST}"
    if not isinstance(files, dict) or not files:
        raise ArtifactError(
            f"{where}: 'files' must be an object mapping each bundle file to its sha256; "
            "the manifest is damaged, re-export the bundle"
        )
    for relative, digest in files.items():
        if not is_bundle_path(relative):
            raise ArtifactError(
                f"{where}: file entry {relative!r} is not a path inside the bundle; re-export it"
            )
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ArtifactError(
                f"{where}: the sha256 of {relative!r} must be 64 hex digits, got {digest!r}; "
                "re-export the bundle"
            )
    return files


def is_bundle_path(relative: Any) -> bool:
    """Whether ``relative`` is a relative POSIX path that stays inside the bundle."""
    if not isinstance(relative, str) or not relative or "\\" in relative:
        return False
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts and path.parts[0] != "."


def _vllm_lm(spec: Mapping[str, Any], predictor: Mapping[str, Any], max_tokens: int) -> lf.LM:
    from .backends import VLLMBackend

    base_url = os.environ.get(spec["base_url_env"]) or spec["base_url"]
    backend = VLLMBackend(
        base_url, predictor["served_model"], api_key=os.environ.get(spec["api_key_env"]) or None
    )
    model_type = predictor["model_type"]
    profile = profile_for(predictor["profile_model"], model_type)
    return lf.LM(
        f"hosted_vllm/{predictor['served_model']}",
        model_type=model_type,
        backend=backend,
        cache=False,
        profile=profile,
        **{"max_tokens": max_tokens, **predictor.get("defaults", {})},
    )


def _managed_lm(spec: Mapping[str, Any], predictor: Mapping[str, Any], max_tokens: int) -> lf.LM:
    from lmforge.lm.litellm_backend import LiteLLMBackend

    from .backends import CacheHintBackend, FallbackBackend

    api_base = os.environ.get(spec.get("api_base_env") or "") or None
    backend: Any = LiteLLMBackend(
        api_key=os.environ.get(spec["api_key_env"]) or None, api_base=api_base
    )
    if spec.get("fallback_model"):
        fallback_key = os.environ.get(spec.get("fallback_api_key_env") or "") or None
        # The fallback has its own endpoint (none: the provider's default), never the
        # primary's: a second provider must not receive requests meant for the first.
        fallback_base = os.environ.get(spec.get("fallback_api_base_env") or "") or None
        fallback = LiteLLMBackend(api_key=fallback_key, api_base=fallback_base)
        backend = FallbackBackend(backend, fallback, spec["fallback_model"])
    if spec.get("cache_hints"):
        backend = CacheHintBackend(backend, spec["cache_hints"])
    model_type = predictor["model_type"]
    return lf.LM(
        spec["model"],
        model_type=model_type,
        backend=backend,
        cache=False,
        profile=profile_for(predictor["profile_model"], model_type),
        **{"max_tokens": max_tokens, **predictor.get("defaults", {})},
    )


def load_bundle(
    directory: Path,
    config: ServerConfig | None = None,
    *,
    artifact_lms: bool = False,
    default_lm: lf.LM | None = None,
) -> tuple[lf.Module, ServerConfig]:
    """Rebuild a bundle's program, pointed at its served model, and its server settings.

    ``config`` overrides the bundle's settings (its name, reference statistics and
    readiness checks are filled in from the bundle when the override leaves them empty).
    ``artifact_lms`` keeps the LMs recorded in the artifact (e.g. the embedded local
    model) instead of the bundle's engine: for trying a bundle without vLLM or a provider;
    predictors saved without an LM then use ``default_lm`` (else the default model).
    """
    from .backends import env_key_check, http_health_check

    directory = Path(directory)
    manifest = verify_bundle(directory)
    serving = read_serving(directory)
    source = directory / SOURCE_DIR
    if source.is_dir() and str(source) not in sys.path:
        sys.path.insert(0, str(source))
    # The program code the bundle ships (checked against its manifest above) is what
    # serving it runs; the artifact may import that and lmforge, nothing else.
    shipped = (
        [".".join(p.relative_to(source).with_suffix("").parts) for p in source.rglob("*.py")]
        if source.is_dir()
        else []
    )
    program = lf.load(directory / "program.json", trusted_modules=shipped)
    decode = serving.get("decode")
    if decode is not None:  # `lmforge export --decode`: one mode for every predictor
        if decode not in ("auto", "score", "generate"):
            raise ArtifactError(
                f"serving.json: decode must be auto, score or generate, not {decode!r}; re-export"
            )
        from lmforge.scoring import set_decode

        set_decode(program, decode)
    backend = serving["backend"]
    max_tokens = int(serving.get("max_tokens", 256))
    predictors = dict(program.named_predictors())
    for name, spec in serving["predictors"].items():
        if name not in predictors:
            raise ArtifactError(
                f"serving.json names predictor {name!r} that program.json does not have; re-export"
            )
        if artifact_lms:
            continue
        make = _vllm_lm if serving["target"] == "vllm" else _managed_lm
        predictors[name].lm = make(backend, spec, max_tokens)
    checks: list[ReadinessCheck] = []
    if artifact_lms:
        for predictor in predictors.values():
            if predictor.lm is None:
                predictor.lm = default_lm or lf.LM(cache=False)
    elif serving["target"] == "vllm":
        url = os.environ.get(backend["base_url_env"]) or backend["base_url"]
        checks = [http_health_check(url.rstrip("/") + "/health", "vLLM")]
    else:
        checks = [env_key_check(backend["api_key_env"], backend["model"])]
    limits = bundle_limits(serving)
    answers = answer_options(serving)
    if config is None:
        config = ServerConfig(
            name=serving["name"], api_keys=api_keys_from_env(), **limits, **answers
        )
    return program, config.replace(
        name=serving["name"],
        # the operator's flags may turn these on for a bundle that leaves them off
        answer_metadata=config.answer_metadata or answers["answer_metadata"],
        withhold=config.withhold or answers["withhold"],
        request_log=config.request_log or bundle_request_log(serving, directory),
        artifact_sha256=config.artifact_sha256 or manifest.get("artifact_sha256"),
        reference_stats=config.reference_stats or serving.get("reference_stats"),
        readiness=config.readiness or tuple(checks),
        structured=config.structured
        or {n: p.get("structured_output") for n, p in serving["predictors"].items()},
    )
