"""The database run store (MIPRO workers on several machines), on SQLite through the same
SQLAlchemy code path that PostgreSQL uses (the real server: test_mipro_postgres.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from lmforge.errors import UsageError
from lmforge.optimizers.shared_store import DatabaseRunStore, database_url, is_database_url


def test_workers_share_steps_and_the_first_stored_value_wins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    one = DatabaseRunStore(url, {"seed": 1})
    two = DatabaseRunStore(url, {"seed": 1})  # another worker of the same run
    other = DatabaseRunStore(url, {"seed": 2})  # another run in the same database
    assert one.get("eval/a") is None
    stored = one.put("eval/a", {"score": 0.5}, {"lm_calls": 3})
    assert (
        two.get("eval/a")
        == stored
        == {
            "key": "eval/a",
            "value": {"score": 0.5},
            "usage": {"lm_calls": 3},
        }
    )
    # A worker that computed the same step later keeps the stored value, so every worker
    # continues from the same one.
    assert two.put("eval/a", {"score": 0.9}, {"lm_calls": 3})["value"] == {"score": 0.5}
    assert other.get("eval/a") is None
    assert one.shared and not one.persistent


def test_local_folder_is_only_for_this_workers_files(tmp_path: Path) -> None:
    store = DatabaseRunStore(f"sqlite:///{tmp_path / 'runs.db'}", {}, tmp_path / "run")
    store.put("k", 1, {})
    assert store.path("result.json") == tmp_path / "run" / "result.json"
    assert not (tmp_path / "run" / "steps").exists()


def test_urls() -> None:
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert is_database_url("postgresql://h/db") and is_database_url("mysql://h/db")
    assert not is_database_url("sqlite:///x.db") and not is_database_url(None)


def test_an_unreachable_database_is_a_one_line_usage_error_without_the_password() -> None:
    pytest.importorskip("psycopg", reason="needs the 'postgres' extra (the driver)")
    with pytest.raises(UsageError, match="cannot open optuna storage") as info:
        DatabaseRunStore("postgresql://user:s3cret@127.0.0.1:9/db", {})
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)


def test_a_missing_database_driver_names_the_extra_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    with pytest.raises(UsageError, match=r"pip install 'lmforge\[postgres\]'") as info:
        DatabaseRunStore("postgresql://user:s3cret@127.0.0.1:9/db", {})
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)
