"""Export a bundle, serve it for a moment and call it once: the last step of the quickstart.

On a machine without vLLM or a provider key, the bundle's program server runs with the
model recorded in the artifact (``artifact_lms``), e.g. the embedded local model, so the
whole path (bundle files, server, auth, typed endpoint) is exercised for real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lmforge.errors import MissingExtraError, UsageError

from .bundle import load_bundle
from .config import ServerConfig
from .export import ExportOptions, export_bundle

__all__ = ["TryoutResult", "serve_in_thread", "tryout"]


@dataclasses.dataclass(frozen=True)
class TryoutResult:
    """What the tryout did: the bundle written, the URL served, the live answer."""

    bundle: Path
    name: str
    files: int
    url: str
    inputs: dict[str, Any]
    answer: dict[str, Any]
    latency_ms: float


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL, stops on exit."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve", "serving a bundle") from None
    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="lmforge-tryout-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise UsageError(
                f"the program server did not start on {host}:{port}; is the port free?"
            )
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def tryout(
    artifact: str | Path,
    out: str | Path,
    inputs: Mapping[str, Any],
    *,
    target: str = "vllm",
    force: bool = True,
    timeout: float = 300.0,
    lm: Any = None,
) -> TryoutResult:
    """Export ``artifact`` to ``out``, serve the bundle on 127.0.0.1 with a fresh API key
    and the artifact's own model (``lm`` for predictors saved without one), and call
    ``POST /v1/programs/{name}`` with ``inputs``."""
    import httpx

    from .server import create_app

    result = export_bundle(artifact, out, ExportOptions(target=target), force=force)  # type: ignore[arg-type]
    key = secrets.token_urlsafe(24)
    program, config = load_bundle(
        result.path, ServerConfig(api_keys=(key,)), artifact_lms=True, default_lm=lm
    )
    with serve_in_thread(create_app(program, config)) as url:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/v1/programs/{config.name}",
            json=dict(inputs),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )
        latency = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        error = response.json().get("error", {})
        raise UsageError(
            f"the served program answered HTTP {response.status_code}: {error.get('message')}"
        )
    return TryoutResult(
        result.path,
        config.name,
        len(result.manifest["files"]) + 1,
        url,
        dict(inputs),
        response.json(),
        latency,
    )
