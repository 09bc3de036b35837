"""Atomic writes: unique temp names, cleanup of killed writers' temps, folder swaps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lmforge as lf
import pytest
from lmforge import _atomic
from lmforge._atomic import atomic_file, atomic_path, restore_aside, write_json_atomic
from lmforge.finetune import TrainingData, TrainingExample


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp_name(target: str, writer: str, pid: int, kind: str = "tmp") -> str:
    return f".{target}.{writer}-{pid}-{os.urandom(4).hex()}.{kind}"


def _plant(folder: Path, name: str, *, age_s: float = 0.0, size: int = 16) -> Path:
    path = folder / name
    path.write_bytes(b"x" * size)
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


def test_save_removes_temp_files_of_killed_writers(tmp_path: Path) -> None:
    me = _atomic._writer_tag()
    other_machine = "0" * 8 if me != "0" * 8 else "1" * 8
    old = _atomic.STALE_AFTER_S + 60
    dead = _plant(tmp_path, _temp_name("program.json", me, _dead_pid()), size=1 << 20)
    dead_other_file = _plant(tmp_path, _temp_name("report.html", me, _dead_pid()))
    reused_pid = _plant(tmp_path, _temp_name("program.json", me, os.getpid()), age_s=old)
    remote_old = _plant(tmp_path, _temp_name("program.json", other_machine, 1), age_s=old)
    live = _plant(tmp_path, _temp_name("program.json", me, os.getpid()))
    remote_fresh = _plant(tmp_path, _temp_name("program.json", other_machine, 1))
    unrelated = _plant(tmp_path, ".program.json.tmp", age_s=old)  # not our naming: kept

    lf.Predict("question -> answer").save(tmp_path / "program.json")

    for gone in (dead, dead_other_file, reused_pid, remote_old):
        assert not gone.exists(), gone.name
    for kept in (live, remote_fresh, unrelated):
        assert kept.exists(), kept.name
    assert lf.load(tmp_path / "program.json") is not None


def test_training_data_write_from_concurrent_writers(tmp_path: Path) -> None:
    # The JSONL files were written through one fixed temp name: two writers of the same
    # folder renamed each other's half-written temp file, or found it gone.
    examples = [
        TrainingExample("qa", ({"role": "user", "content": f"q{i}" * 50},), f"q{i}", f"a{i}")
        for i in range(200)
    ]
    data = TrainingData.build(examples, seed=1)

    def write_often() -> None:
        for _ in range(15):
            data.write(tmp_path)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(write_often) for _ in range(4)]:
            future.result()  # re-raises what a writer hit
    assert TrainingData.read(tmp_path).train == data.train
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_a_file_never_replaces_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    with pytest.raises(IsADirectoryError):
        write_json_atomic(folder, {"a": 1})
    assert (folder / "keep.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


@pytest.mark.parametrize("exchange", [True, False])
def test_folder_replaces_a_non_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # a system or filesystem without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(_atomic, "_exchange", lambda first, second: False)
    target = tmp_path / "tool"
    (target / "old").mkdir(parents=True)
    with atomic_path(target) as staging:
        (staging / "new").mkdir(parents=True)
        assert (target / "old").is_dir()  # the old copy is there until the swap
    assert [p.name for p in target.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["tool"]


def test_folder_renamed_aside_by_a_killed_swap_is_put_back(tmp_path: Path) -> None:
    target = tmp_path / "tool"
    aside = tmp_path / _temp_name("tool", _atomic._writer_tag(), _dead_pid(), "old")
    (aside / "old").mkdir(parents=True)
    restore_aside(target)
    assert (target / "old").is_dir() and not aside.exists()
