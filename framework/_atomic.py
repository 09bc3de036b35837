"""Atomic writes: a file or a folder is complete at its path, or not there at all.

Everything is first written under a temporary name in the target's own folder (the same
filesystem, so the final rename is atomic): ``.<name>.<writer>-<pid>-<random>.tmp``, where
``<writer>`` tags the machine and pid namespace of the writing process. A process killed
mid-write leaves such an entry behind; the next write into that folder removes the ones
whose writer is gone (or that nobody touched for :data:`STALE_AFTER_S`).

A folder that replaces an existing one is swapped in with one ``renameat2(RENAME_EXCHANGE)``
where the system has it, so the old copy stays at the path until the new one is there.
Elsewhere the old copy is renamed aside (``....old``) first and renamed back by
:func:`restore_aside` if the process dies before the new copy is in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "STALE_AFTER_S",
    "atomic_file",
    "atomic_path",
    "clean_stale",
    "restore_aside",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

STALE_AFTER_S = 600.0
"""A temporary entry untouched this long is stale even if a process with its pid is alive
(the pid may have been reused, or the writer runs on another machine)."""

_TEMP = re.compile(
    r"\.(?P<name>.+)\.(?P<writer>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|old)"
)
_NAME_MAX = 100  # of the target's name inside a temporary name: keeps it under NAME_MAX
_RENAME_EXCHANGE = 2  # linux/fs.h


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_file(path) as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (newlines written as given)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], document: Any) -> None:
    """Write ``document`` as indented UTF-8 JSON to ``path`` atomically."""
    text = json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    write_text_atomic(path, text)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` when the block ends normally.

    The file is fsynced before the rename; on any exception it is removed and ``path`` is
    left as it was. Permissions follow the umask, as for a plain ``open``.
    """
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` (nothing there yet) for the block to create
    a file or a folder at; it then replaces ``path`` atomically. On any exception it is
    removed and ``path`` is left as it was.

    Entering also cleans stale temporary entries of earlier, killed writers in that folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_aside(target)
    clean_stale(target.parent)
    tmp = _temp_path(target, "tmp")
    try:
        yield tmp
        _swap_in(tmp, target)
    finally:
        _remove(tmp)


def restore_aside(target: Path) -> None:
    """Rename back the old copy of ``target`` that a killed folder swap left aside, if
    ``target`` itself is missing (only happens where ``RENAME_EXCHANGE`` is unavailable)."""
    if os.path.lexists(target):
        return
    mine = _writer_tag()
    asides = [
        path
        for path, match in _temp_entries(target.parent)
        if match["kind"] == "old"
        and match["name"] == target.name[:_NAME_MAX]
        # a live writer here is between its two renames: leave its copy be
        and not (match["writer"] == mine and _pid_alive(int(match["pid"])))
    ]
    if asides:
        newest = max(asides, key=_last_touched)
        with contextlib.suppress(FileNotFoundError):  # another process restored it first
            os.rename(newest, target)


def clean_stale(folder: Path) -> None:
    """Remove the temporary entries in ``folder`` left by writers that are gone.

    An aside copy (``.old``) is kept while its target is missing: :func:`restore_aside`
    brings it back.
    """
    now = time.time()
    for path, match in _temp_entries(folder):
        if match["kind"] == "old" and not os.path.lexists(folder / match["name"]):
            continue
        if not _writing(match) or now - _last_touched(path) > STALE_AFTER_S:
            _remove(path)


def _writing(match: re.Match[str]) -> bool:
    """Whether the writer of a temporary entry may still be at work: it is this machine's
    and its pid is alive, or it is another machine's (whose pids cannot be checked)."""
    return match["writer"] != _writer_tag() or _pid_alive(int(match["pid"]))


def _swap_in(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing ``target`` is replaced, and a replaced
    folder (or one replaced by a file) is removed afterwards."""
    if not os.path.lexists(tmp):
        raise FileNotFoundError(errno.ENOENT, "nothing was written", str(tmp))
    # A file never replaces a folder (os.replace refuses it); a folder may replace anything.
    if not (tmp.is_dir() and not tmp.is_symlink()) or not os.path.lexists(target):
        os.replace(tmp, target)
    elif _exchange(tmp, target):
        pass  # the old copy is now at ``tmp``, removed by the caller
    else:
        aside = _temp_path(target, "old")
        os.rename(target, aside)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(aside, target)
            raise
        _remove(aside)
    _fsync_folder(target.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where the system or filesystem cannot."""
    import ctypes  # only needed here; keeps ``import lmforge`` light

    libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    at_cwd = -100  # AT_FDCWD: the paths are used as given
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _temp_path(target: Path, kind: str) -> Path:
    name = target.name[:_NAME_MAX]
    tag = f"{_writer_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{name}.{tag}.{kind}")


def _temp_entries(folder: Path) -> Iterator[tuple[Path, re.Match[str]]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP.fullmatch(entry.name) if entry.name.startswith(".") else None
        if match:
            yield Path(entry.path), match


def _writer_tag() -> str:
    """Eight hex digits naming this machine and pid namespace: a pid is only checked for
    liveness when the writer's tag matches ours."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    seed = f"{socket.gethostname()}/{namespace}".encode()
    return hashlib.sha256(seed).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else (or cannot tell): keep its files
    return True


def _last_touched(path: Path) -> float:
    """The newest modification time in ``path`` (a file, or a folder and all it holds)."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    with contextlib.suppress(OSError):
                        newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    except OSError:
        return time.time()  # vanished or unreadable: treat as fresh, leave it alone
    return newest


def _remove(path: Path) -> None:
    """Remove a temporary file or folder; failing to is never worse than the error at hand."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename itself has happened
    finally:
        os.close(fd)
