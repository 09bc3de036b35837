"""Real-model tests share one assembled model file per test session (it is 253 MB), in
this process and in the child processes they start."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lmforge-models")


@pytest.fixture(autouse=True)
def _shared_model_files(shared_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_MODELS_DIR", str(shared_models_dir))


@pytest.fixture
def subprocess_env(subprocess_env: dict[str, str], shared_models_dir: Path) -> dict[str, str]:
    return {**subprocess_env, "LMFORGE_MODELS_DIR": str(shared_models_dir)}
