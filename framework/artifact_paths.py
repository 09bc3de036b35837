"""Paths recorded in artifacts and bundles, confined to the folder of the file naming them.

An artifact records the adapter files it carries (``lm.lora``, ``meta.finetune.adapter_path``)
relative to itself. Such a file may come from anyone, and its checksum can be recomputed
by whoever edits it, so every recorded path goes through :func:`confined_path` before it
is read, copied or served: a path that leaves the artifact's folder would make loading,
saving or exporting read (and copy into a bundle) whatever files it names.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ArtifactError

__all__ = ["confined_path"]


def confined_path(value: object, directory: Path, *, what: str) -> Path:
    """``value``, a relative path recorded in a file in ``directory``, as a path inside it.

    Refuses (:class:`ArtifactError`) a value that is not a non-empty string, an absolute
    path, a ``..`` escape, and a symlink leading out of ``directory`` (the path itself, a
    folder on the way, or anything inside a folder it names).
    """
    if not isinstance(value, str) or not value.strip():
        raise ArtifactError(f"{what} must be a relative path (a string), got {value!r}")
    relative = Path(value)
    fix = "keep such files in a folder next to the artifact (adapters/) and re-save it"
    if relative.is_absolute():
        raise ArtifactError(
            f"{what} {value!r} is absolute: it points outside the artifact's folder {directory}; "
            f"{fix}"
        )
    root = directory.resolve()
    path = directory / relative
    leaks = [path] + (sorted(path.rglob("*")) if path.is_dir() else [])
    for entry in leaks:
        if not entry.resolve().is_relative_to(root):
            raise ArtifactError(
                f"{what} {value!r} points outside the artifact's folder {directory} "
                f"(through {entry.relative_to(directory).as_posix()}); {fix}"
            )
    return path
