"""Assembling packaged model files: sha256 check, atomic rename, locking, reuse."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.lm import local_models
from lmforge.lm.local_models import PackagedModel, ensure_model_file, resolve_model_path


class FakePackage:
    """A model split in chunk files, counting how often its chunks are read."""

    def __init__(self, root: Path, parts: list[bytes]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.paths = []
        for i, data in enumerate(parts):
            path = root / f"model.gguf.part{i:02d}"
            path.write_bytes(data)
            self.paths.append(path)
        self.digest = hashlib.sha256(b"".join(parts)).hexdigest()
        self.reads = 0
        self.lock = threading.Lock()

    def chunks(self) -> list[Path]:
        with self.lock:
            self.reads += 1
        return list(self.paths)

    def spec(self, digest: str | None = None) -> PackagedModel:
        return PackagedModel(
            name="fake",
            filename="fake.gguf",
            chunks=self.chunks,
            sha256=lambda: digest or self.digest,
        )


@pytest.fixture
def package(tmp_path: Path) -> FakePackage:
    return FakePackage(tmp_path / "pkg", [b"GGUF" + b"a" * 3000, b"b" * 5000, b"c" * 17])


def test_assembles_once_and_verifies(package: FakePackage, tmp_path: Path) -> None:
    target = ensure_model_file(package.spec(), tmp_path / "models", progress=False)
    assert target == tmp_path / "models" / "fake.gguf"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == package.digest
    note = json.loads((tmp_path / "models" / "fake.gguf.sha256").read_text())
    assert note["sha256"] == package.digest and note["size"] == target.stat().st_size
    assert ensure_model_file(package.spec(), tmp_path / "models", progress=False) == target
    assert package.reads == 1  # the second call trusted the verified note
    assert not list((tmp_path / "models").glob(".fake.gguf.*"))  # no temp file left


def test_sha_mismatch_leaves_no_file(package: FakePackage, tmp_path: Path) -> None:
    with pytest.raises(lf.LMError, match="sha256"):
        ensure_model_file(package.spec("0" * 64), tmp_path / "models", progress=False)
    assert not (tmp_path / "models" / "fake.gguf").exists()
    assert not list((tmp_path / "models").glob(".fake.gguf.*"))


def test_changed_file_is_rechecked_and_rebuilt(package: FakePackage, tmp_path: Path) -> None:
    target = ensure_model_file(package.spec(), tmp_path / "models", progress=False)
    target.write_bytes(b"corrupted")
    ensure_model_file(package.spec(), tmp_path / "models", progress=False)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == package.digest
    assert package.reads == 2


def test_existing_good_file_without_note_is_adopted(package: FakePackage, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fake.gguf").write_bytes(b"".join(p.read_bytes() for p in package.paths))
    ensure_model_file(package.spec(), tmp_path / "models", progress=False)
    assert package.reads == 0
    assert (tmp_path / "models" / "fake.gguf.sha256").exists()


def test_missing_chunks_say_how_to_fix(package: FakePackage, tmp_path: Path) -> None:
    package.paths[1].unlink()
    with pytest.raises(lf.UsageError, match="pip install --force-reinstall 'lmforge\\[local\\]'"):
        ensure_model_file(package.spec(), tmp_path / "models", progress=False)


def test_threads_racing_assemble_once(package: FakePackage, tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ensure_model_file(package.spec(), tmp_path / "models", progress=False))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    assert package.reads == 1


def _assemble_in_child(
    chunks: list[str], digest: str, directory: str, queue: multiprocessing.Queue
) -> None:
    spec = PackagedModel(
        name="fake",
        filename="fake.gguf",
        chunks=lambda: [Path(c) for c in chunks],
        sha256=lambda: digest,
    )
    path = ensure_model_file(spec, Path(directory), progress=False)
    queue.put(hashlib.sha256(path.read_bytes()).hexdigest())


def test_processes_racing_get_a_complete_file(package: FakePackage, tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    args = ([str(p) for p in package.paths], package.digest, str(tmp_path / "models"), queue)
    children = [context.Process(target=_assemble_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert [queue.get(timeout=5), queue.get(timeout=5)] == [package.digest, package.digest]


def test_models_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_MODELS_DIR", raising=False)
    assert local_models.models_dir() == tmp_path / "cache" / "models"
    monkeypatch.setenv("LMFORGE_MODELS_DIR", str(tmp_path / "models"))
    assert local_models.models_dir() == tmp_path / "models"


def test_resolve_model_path(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(f"local/{gguf}") == gguf
    with pytest.raises(lf.UsageError, match="no GGUF file"):
        resolve_model_path(f"local/{tmp_path / 'missing.gguf'}")
    with pytest.raises(lf.UsageError, match="local/gemma-3-270m"):
        resolve_model_path("local/not-a-model")
