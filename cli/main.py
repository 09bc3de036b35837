"""Entry point of the ``lmforge`` command: imports every command module, then runs."""

from __future__ import annotations

import importlib

from .app import app

# Each module registers its commands on ``app`` when imported.
_COMMAND_MODULES = (
    "run",
    "deploy",
    "compile",
    "eval",
    "quickstart",
    "migrate",
    "feedback",
    "batch",
)


def main() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"lmforge.cli.{name}")
    app()


if __name__ == "__main__":
    main()
