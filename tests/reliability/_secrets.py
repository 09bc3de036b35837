"""A secret scanner that sees what lmforge stores, not only plain files.

Plain bytes miss two stores: diskcache's ``JSONDisk`` (the LM cache) zlib-compresses every
key and value, in ``cache.db`` rows and in ``*.val`` files; and SQLite (the LM cache, optuna
studies) splits long values across overflow pages and may hold recent rows in its ``-wal``
file. So every file is searched as bytes, every row of every table of a SQLite file is
searched through SQL, and every zlib stream found in any of these is inflated and searched
too.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["Scan", "scan", "views"]

SQLITE_MAGIC = b"SQLite format 3\x00"
# A zlib stream starts with 0x78 and a level byte (diskcache passes ``disk_compress_level``).
_ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_MAX_INFLATED = 256 * 2**20  # a guard against decompression bombs in a test's own output


@dataclasses.dataclass
class Scan:
    """What a scan looked at, and where each needle was found."""

    files: int = 0
    sqlite_rows: int = 0
    inflated: int = 0  # zlib streams decompressed and searched
    found: dict[str, list[bytes]] = dataclasses.field(default_factory=dict)


def views(blob: bytes, scan: Scan | None = None) -> Iterator[bytes]:
    """``blob`` itself, then every zlib stream inside it, inflated."""
    yield blob
    data = memoryview(blob)
    for header in _ZLIB_HEADERS:
        start = blob.find(header)
        while start != -1:
            try:
                inflated = zlib.decompressobj().decompress(data[start:], _MAX_INFLATED)
            except zlib.error:
                inflated = b""
            if inflated:
                if scan is not None:
                    scan.inflated += 1
                yield inflated
            start = blob.find(header, start + 1)


def _sqlite_cells(path: Path, scan: Scan) -> Iterator[bytes]:
    # Read-only, so scanning never checkpoints or otherwise changes the store it reads.
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            quoted = table.replace('"', '""')
            for row in connection.execute(f'SELECT * FROM "{quoted}"'):
                scan.sqlite_rows += 1
                for value in row:
                    if isinstance(value, bytes):
                        yield value
                    elif isinstance(value, str):
                        yield value.encode()
    finally:
        connection.close()


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path


def scan(roots: Iterable[Path], needles: Iterable[bytes]) -> Scan:
    """Search every file under ``roots`` (bytes, SQLite rows, inflated zlib streams) for
    each of ``needles``; ``Scan.found`` maps a file to the needles found in it."""
    wanted = sorted(set(needles))
    result = Scan()
    for path in _files(roots):
        result.files += 1
        blob = path.read_bytes()
        pieces = [blob]
        if blob.startswith(SQLITE_MAGIC):
            pieces.extend(_sqlite_cells(path, result))
        hits = {n for piece in pieces for view in views(piece, result) for n in wanted if n in view}
        if hits:
            result.found[str(path)] = sorted(hits)
    return result
