"""Datasets: JSONL loading with one-line errors, seeded splits, dataset hashes."""

from __future__ import annotations

import json
from pathlib import Path

import lmforge as lf
import pytest
from lmforge.data import DataError, dataset_hash, load_jsonl, split


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(n: int) -> list[str]:
    return [
        json.dumps({"ticket": f"ticket {i}", "team": "billing" if i % 2 else "sales"})
        for i in range(n)
    ]


def test_load_marks_inputs_and_keeps_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [*rows(3), "", "   "])
    examples = load_jsonl(path, inputs=["ticket"])
    assert len(examples) == 3
    assert examples[1].inputs().to_dict() == {"ticket": "ticket 1"}
    assert examples[1].labels().to_dict() == {"team": "billing"}
    assert lf.data.load_jsonl is load_jsonl


def test_limit_and_unmarked_examples(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", rows(5))
    examples = load_jsonl(path, limit=2)
    assert len(examples) == 2
    assert examples[0].input_keys is None


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"ticket": "x", "team": ', "line 3: not valid JSON"),
        ('["ticket", "team"]', "line 3: expected a JSON object, got list"),
        ('{"team": "sales"}', "line 3: missing input field(s) 'ticket'"),
        ('{"ticket": "no label here"}', "line 3: missing label field(s) 'team'"),
    ],
)
def test_bad_line_is_a_one_line_error_naming_the_line(
    tmp_path: Path, bad_line: str, expected: str
) -> None:
    path = write(tmp_path / "d.jsonl", [*rows(2), bad_line, *rows(2)])
    with pytest.raises(DataError) as info:
        load_jsonl(path, inputs=["ticket"])
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_explicit_labels_are_required(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", rows(2))
    with pytest.raises(DataError, match="line 1: missing label field"):
        load_jsonl(path, inputs=["ticket"], labels=["priority"])


def test_records_with_only_inputs_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", ['{"ticket": "a"}'])
    with pytest.raises(DataError, match="only input fields"):
        load_jsonl(path, inputs=["ticket"])


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset file"):
        load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no records"):
        load_jsonl(write(tmp_path / "empty.jsonl", [""]))
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        load_jsonl(tmp_path / "bin.jsonl")


def examples(n: int) -> list[lf.Example]:
    return [lf.Example(q=str(i), a=str(i)).with_inputs("q") for i in range(n)]


def test_split_is_seeded_and_covers_everything() -> None:
    data = examples(20)
    train, dev, test = split(data, 0.6, 0.2, 0.2, seed=3)
    assert (len(train), len(dev), len(test)) == (12, 4, 4)
    assert sorted(e.q for e in train + dev + test) == sorted(e.q for e in data)
    again = split(data, 0.6, 0.2, 0.2, seed=3)
    assert [e.q for e in again[0]] == [e.q for e in train]
    other = split(data, 0.6, 0.2, 0.2, seed=4)
    assert [e.q for e in other[0]] != [e.q for e in train]


def test_split_by_counts_and_errors() -> None:
    data = examples(10)
    a, b = split(data, 3, 2, shuffle=False)
    assert [e.q for e in a] == ["0", "1", "2"] and [e.q for e in b] == ["3", "4"]
    with pytest.raises(lf.UsageError, match="need 12"):
        split(data, 6, 6)
    with pytest.raises(lf.UsageError, match="sum to"):
        split(data, 0.7, 0.7)
    with pytest.raises(lf.UsageError, match="all fractions"):
        split(data, 0.5, 3)
    with pytest.raises(lf.UsageError):
        split(data)


def test_dataset_hash_tracks_content_order_and_inputs() -> None:
    data = examples(4)
    assert dataset_hash(data) == dataset_hash(examples(4))
    assert dataset_hash(data) != dataset_hash(list(reversed(data)))
    assert dataset_hash(data) != dataset_hash([e.with_inputs("a") for e in data])
    assert len(dataset_hash(data)) == 64


def test_a_string_of_field_names_is_names_not_characters(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl",
        [json.dumps({"ticket": "t", "channel": "mail", "team": "billing"})],
    )
    (one,) = load_jsonl(path, inputs="ticket")
    assert one.input_keys == ("ticket",)
    assert one.labels().to_dict() == {"channel": "mail", "team": "billing"}
    (two,) = load_jsonl(path, inputs="ticket, channel", labels="team")
    assert two.input_keys == ("ticket", "channel")
    assert two.labels().to_dict() == {"team": "billing"}
    assert lf.data.as_field_names("a, b", "x") == lf.data.as_field_names(["a", "b"], "x")


@pytest.mark.parametrize("inputs", [5, [1], ["ticket", ""], {"ticket": 1}])
def test_inputs_that_are_not_field_names_are_usage_errors(tmp_path: Path, inputs: object) -> None:
    path = write(tmp_path / "d.jsonl", rows(1))
    with pytest.raises(lf.UsageError, match=r"load_jsonl\(inputs=\.\.\.\) must be field names"):
        load_jsonl(path, inputs=inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["0.5", None, True, [0.5]])
def test_split_sizes_that_are_not_numbers_are_usage_errors(size: object) -> None:
    examples = [lf.Example(x=i).with_inputs("x") for i in range(4)]
    with pytest.raises(lf.UsageError, match="split sizes must be numbers"):
        split(examples, size)  # type: ignore[arg-type]


def test_a_carriage_return_does_not_start_a_line(tmp_path: Path) -> None:
    # Found by the reliability suite's random files: "\r" counted as a line break, so errors
    # named lines the file does not have. Lines end at "\n"; CRLF files still load.
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n\r\x00")
    with pytest.raises(lf.data.DataError, match=r"bad\.jsonl line 2: not valid JSON"):
        lf.data.load_jsonl(bad)
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b'{"q": "a\\rb", "a": 1}\r\n{"q": "c", "a": 2}\r\n')
    rows = lf.data.load_jsonl(crlf, inputs=["q"])
    assert [(r.q, r.a) for r in rows] == [("a\rb", 1), ("c", 2)]
