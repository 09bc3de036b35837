"""Deploy targets: serve a compiled program, or export it as a bundle for vLLM or a managed API.

``create_app(program, config)`` builds the program server (FastAPI); ``export_bundle``
writes a bundle directory; ``load_bundle`` rebuilds the program and server settings from
one. The server needs the ``serve`` extra (``pip install 'lmforge[serve]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DriftMonitor",
    "MemoryPlan",
    "ServerConfig",
    "create_app",
    "export_bundle",
    "load_bundle",
    "plan_memory",
    "program_signature",
    "reference_stats",
]

_LAZY = {
    "DriftMonitor": "lmforge.targets.drift",
    "MemoryPlan": "lmforge.targets.memory",
    "ServerConfig": "lmforge.targets.config",
    "create_app": "lmforge.targets.server",
    "export_bundle": "lmforge.targets.export",
    "load_bundle": "lmforge.targets.bundle",
    "plan_memory": "lmforge.targets.memory",
    "program_signature": "lmforge.targets.program",
    "reference_stats": "lmforge.targets.drift",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmforge.targets' has no attribute {name!r}")
