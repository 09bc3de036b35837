"""Shared test setup: every test runs with its own empty cache directory, real provider
calls blocked, and no model chosen through the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep tests away from the user's cache dir and from real providers."""
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("lmforge-cache")))
    monkeypatch.setenv("LMFORGE_BLOCK_NETWORK", "1")
    monkeypatch.delenv("LMFORGE_MODEL", raising=False)


@pytest.fixture
def subprocess_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a child ``python`` that sees the installed lmforge and nothing of the
    test's own modules, with a private home and cache directory."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LMFORGE_"))}
    env.update(
        HOME=str(home),
        LMFORGE_CACHE_DIR=str(tmp_path / "cache"),
        LMFORGE_BLOCK_NETWORK="1",
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
        COLUMNS="200",
    )
    yield env


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (the project venv's)."""
    return sys.executable
