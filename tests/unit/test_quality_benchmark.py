"""``benchmarks/quality.py`` and its tasks: the datasets load and are well formed, the
hand-written prompts are what they claim, the Wilson interval is right, and each kind of
method (majority, a prompt, an optimizer) is scored and counted right with a fake LM."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import lmforge as lf
import pytest
from lmforge.optimizers import OPTIMIZERS
from lmforge.testing import FunctionLM

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Any:
    """The benchmark modules, imported from ``benchmarks/`` (a folder of scripts)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import quality
        import quality_tasks

        yield quality, quality_tasks


def test_four_tasks_one_binary(bench: Any) -> None:
    _, tasks = bench
    sizes = sorted(len(task.labels) for task in tasks.TASKS.values())
    assert len(sizes) == 4
    assert sizes[0] == 2
    assert all(4 <= size <= 10 for size in sizes[1:])


def test_splits_load_with_the_signatures_labels(bench: Any) -> None:
    _, tasks = bench
    for task in tasks.TASKS.values():
        rows = {split: task.load(split) for split in tasks.SPLITS}
        assert sum(len(r) for r in rows.values()) >= 150, task.name
        assert len(rows["test"]) >= 60, task.name
        for split, examples in rows.items():
            assert set(examples[0].keys()) == {task.input, task.label}
            assert examples[0].inputs().keys() == {task.input}
            # every label of the Literal appears in every split, and nothing else does
            assert {e[task.label] for e in examples} == set(task.labels), (task.name, split)
            assert all(e[task.input].strip() for e in examples)


def test_splits_are_disjoint_and_rows_unique(bench: Any) -> None:
    _, tasks = bench
    for task in tasks.TASKS.values():
        texts = [e[task.input] for split in tasks.SPLITS for e in task.load(split)]
        assert len(texts) == len(set(texts)), task.name


def test_multiclass_sets_are_balanced(bench: Any) -> None:
    _, tasks = bench
    for task in tasks.TASKS.values():
        for split in tasks.SPLITS:
            counts = Counter(e[task.label] for e in task.load(split))
            share = max(counts.values()) / sum(counts.values())
            assert share <= (0.5 if len(task.labels) == 2 else 0.3), (task.name, split)


def test_hand_written_prompts_have_four_train_demos(bench: Any) -> None:
    _, tasks = bench
    for task in tasks.TASKS.values():
        train = {e[task.input]: e[task.label] for e in task.load("train")}
        program = task.hand_written()
        assert len(program.demos) == 4, task.name
        for demo in program.demos:
            assert train.get(demo[task.input]) == demo[task.label], (task.name, demo)
        assert program.signature.instructions == task.instructions
        assert program.signature.instructions != task.zero_shot().signature.instructions
        assert not task.zero_shot().demos


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (0, 10, 0.0, 0.2775),  # upper bound z^2 / (n + z^2)
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (50, 100, 0.4038, 0.5962),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_interval_on_known_values(
    bench: Any, successes: int, n: int, low: float, high: float
) -> None:
    quality, _ = bench
    got = quality.wilson(successes, n)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_wilson_interval_needs_a_trial(bench: Any) -> None:
    quality, _ = bench
    with pytest.raises(ValueError, match="at least one trial"):
        quality.wilson(0, 0)


def test_every_registered_optimizer_is_benchmarked(bench: Any) -> None:
    quality, _ = bench
    assert set(quality.methods(with_finetune=True)) == {*quality.BASELINES, *OPTIMIZERS}
    assert "finetune" not in quality.methods(with_finetune=False)
    assert set(quality.QUICK) == set(OPTIMIZERS)


def oracle(task: Any, wrong: set[str]) -> FunctionLM:
    """A base-model fake that answers each row's true label, except for ``wrong`` rows,
    where it answers another label. The row is the known input seen last in the prompt
    (demos come before it)."""
    labels = {e[task.input]: e[task.label] for s in ("train", "dev", "test") for e in task.load(s)}

    def reply(request: lf.LMRequest) -> str:
        prompt = request.as_text()
        text = max(labels, key=prompt.rfind)
        label = labels[text]
        if text in wrong:
            label = next(other for other in task.labels if other != label)
        return " " + label

    return FunctionLM(reply, model_type="text", cache=False)


def test_prompt_methods_are_scored_and_counted(bench: Any) -> None:
    quality, tasks = bench
    task = tasks.TASKS["reviews"]
    test = task.load("test")
    wrong = {e[task.input] for e in test[:6]}
    for method in ("zero-shot", "hand"):
        row = quality.run_method(task, method, lambda _: oracle(task, wrong), quick=True)
        assert (row["correct"], row["n"], row["failed"]) == (54, 60, 0)
        assert row["accuracy"] == pytest.approx(0.9)
        assert (row["low"], row["high"]) == quality.wilson(54, 60)
        assert (row["compile_calls"], row["test_calls"]) == (0, 60)


def test_optimizer_compiles_on_train_and_dev(bench: Any) -> None:
    quality, tasks = bench
    task = tasks.TASKS["scheduling"]
    wrong = {e[task.input] for e in task.load("test")[:3]}
    row = quality.run_method(task, "labeled", lambda _: oracle(task, wrong), quick=True)
    assert row["demos"] == quality.QUICK["labeled"]["k"]
    assert row["dev"] == 1.0  # scored on the dev split, which the oracle gets right
    assert row["compile_calls"] == len(task.load("dev"))
    assert (row["correct"], row["test_calls"]) == (57, 60)


def test_settings_reach_the_optimizer_and_knn_counts_its_per_call_demos(bench: Any) -> None:
    pytest.importorskip("bm25s")
    quality, tasks = bench
    task = tasks.TASKS["scheduling"]
    assert quality.parse_args(["-o", "k=8", "-o", "balanced=false", "-o", "order=x"]).settings == {
        "k": 8,
        "balanced": False,
        "order": "x",
    }
    row = quality.run_method(
        task, "knn", lambda _: oracle(task, set()), quick=True, settings={"k": 3}
    )
    assert row["demos"] == 3 and row["dev"] == 1.0
    assert (row["correct"], row["test_calls"]) == (60, 60)


def test_majority_calls_no_lm(bench: Any) -> None:
    quality, tasks = bench
    task = tasks.TASKS["headlines"]

    def no_lm(method: str) -> lf.LM:
        raise AssertionError("majority must not call an LM")

    row = quality.run_method(task, "majority", no_lm, quick=False)
    assert row["label"] == "politics"  # all tie on train: the first label listed
    assert (row["correct"], row["n"]) == (10, 60)
    assert math.isclose(row["accuracy"], 1 / 6)


def test_cli_writes_json_and_prints_a_table(
    bench: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    quality, _ = bench
    # main() points the LM cache at a fresh folder; setting the variables first restores them.
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LMFORGE_MODELS_DIR", str(tmp_path / "models"))
    out = tmp_path / "out.json"
    assert quality.main(["--only", "majority", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures["datasets"]) == {"headlines", "reviews", "scheduling", "requests"}
    assert figures["datasets"]["scheduling"]["majority"]["accuracy"] == 0.5
    assert "| reviews | majority | 0.20 | 0.12-0.32 |" in capsys.readouterr().out


def test_cli_refuses_unknown_names(bench: Any, capsys: Any) -> None:
    quality, _ = bench
    with pytest.raises(SystemExit):
        quality.main(["--datasets", "banking"])
    assert "unknown dataset 'banking'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality.main(["--only", "finetune"])
    assert "add --with-finetune" in capsys.readouterr().err
