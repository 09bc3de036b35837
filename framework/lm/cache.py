"""The on-disk LM response cache (diskcache), shared safely by threads and processes.

Keys are hashes of the full request (model, messages or prompt, parameters, output
constraints, rollout id); credentials and endpoints never enter a key or a value.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .types import LMRequest, LMResponse

if TYPE_CHECKING:
    import diskcache

__all__ = ["ResponseCache", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$LMFORGE_CACHE_DIR``, else the platform's user cache dir for lmforge."""
    env = os.environ.get("LMFORGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lmforge"))


class ResponseCache:
    """A directory-backed cache of LM responses; the directory is created on first use."""

    _open_lock = threading.Lock()

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._store: diskcache.Cache | None = None

    @property
    def directory(self) -> Path:
        return self._directory or (default_cache_dir() / "lm")

    def _open(self) -> diskcache.Cache:
        if self._store is None:
            with self._open_lock:
                if self._store is None:
                    import sqlite3

                    import diskcache

                    try:
                        self.directory.mkdir(parents=True, exist_ok=True)
                        # sqlite handles cross-process locking; JSON values, never pickle.
                        self._store = diskcache.Cache(
                            str(self.directory),
                            disk=diskcache.JSONDisk,
                            disk_compress_level=1,
                            timeout=60,
                        )
                    except (OSError, sqlite3.Error) as exc:
                        raise UsageError(
                            f"cannot use the LM cache directory {self.directory} ({exc}); set "
                            "$LMFORGE_CACHE_DIR to a writable directory, or pass cache=False"
                        ) from None
        return self._store

    @staticmethod
    def key(request: LMRequest, endpoint: str | None = None) -> str:
        """The request's key; ``endpoint`` separates servers that share a model name.

        The endpoint is hashed into the key, never stored: a URL may carry a user, a
        password or a token, and the cache file must not reveal it.
        """
        if not endpoint:
            return request.cache_key()
        import hashlib

        return hashlib.sha256(f"{endpoint}\0{request.cache_key()}".encode()).hexdigest()

    def get(self, request: LMRequest, endpoint: str | None = None) -> LMResponse | None:
        data: Any = self._open().get(self.key(request, endpoint))
        if data is None:
            return None
        return LMResponse.from_json(data, cache_hit=True)

    def put(self, request: LMRequest, response: LMResponse, endpoint: str | None = None) -> None:
        self._open().set(self.key(request, endpoint), response.to_json())

    def clear(self) -> None:
        self._open().clear()

    def __len__(self) -> int:
        return len(self._open())

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
